"""API tokens of the calling user, for the web UI's account page: list, create (the token
is in the answer once, never again), revoke."""

from typing import Any

from zephserver.errors import RpcCode
from zephserver.task.base import Task, TaskError


class _TokenTask(Task):
    def tokens(self) -> Any:
        from zephserver.web.models import ApiToken

        return ApiToken.objects.filter(user_id=self.request.user.id)


def _json(t: Any) -> dict:
    return {"prefix": t.prefix, "name": t.name, "created": t.created.isoformat(),
            "revoked": t.revoked.isoformat() if t.revoked else None}


class TokensListTask(_TokenTask):
    def main(self) -> list[dict]:
        self.params()
        return [_json(t) for t in self.tokens()]


class TokensCreateTask(_TokenTask):
    def main(self) -> dict:
        name = self.params(name=(str, ""))["name"]
        if len(name) > 100:
            raise TaskError("name must be at most 100 characters", RpcCode.INVALID_PARAMS,
                            {"field": "name"})
        from django.contrib.auth import get_user_model

        from zephserver.web.models import ApiToken

        user = get_user_model().objects.get(pk=self.request.user.id)
        record, token = ApiToken.issue(user, name, parent=self._calling_token())
        return {**_json(record), "token": token}

    def _calling_token(self) -> Any:
        """The token this request came with, if any: a token made with it is revoked
        with it (a leaked token cannot leave live ones behind)."""
        from zephserver.infra.service_manager import get_service
        from zephserver.web.models import ApiToken

        conn = get_service("rooms").connection(self.request.cid)
        credential = getattr(conn, "credential", None)
        if not credential or credential[0] != "token":
            return None
        return ApiToken.objects.filter(digest=credential[1]).first()


class TokensRevokeTask(_TokenTask):
    def main(self) -> dict:
        prefix = self.params(prefix=str)["prefix"]
        from zephserver.web.models import ApiToken

        count = ApiToken.revoke(self.tokens().filter(prefix=prefix, revoked__isnull=True))
        if not count:
            raise TaskError(f"no active token {prefix!r}", RpcCode.NOT_FOUND,
                            {"field": "prefix"})
        return {"revoked": prefix}
