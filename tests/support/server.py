"""What the real servers a test starts (PostgreSQL, Slurm) share: used as a context
manager, one that fails half way through its start is stopped and removed all the same."""

from typing import Self


class ScratchServer:
    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
