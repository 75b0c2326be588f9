"""API tokens of the calling user, for the web UI's account page: list, create (the token
is in the answer once, never again), revoke."""

from typing import Any, ClassVar

from zephserver.audit import audit
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
    """The caller's API tokens (never the tokens themselves).

    Result: a list of {prefix, name, created, revoked}.
    """

    def main(self) -> list[dict]:
        self.params()
        return [_json(t) for t in self.tokens()]


class TokensCreateTask(_TokenTask):
    """A new API token for the caller; made with a token, it is revoked with that token.

    Result: {prefix, name, created, revoked, token}: the token is shown this once.
    Errors: -32602 a name over 100 characters.
    """

    PARAMS: ClassVar[dict[str, Any]] = {"name": (str, "")}

    def main(self) -> dict:
        name = self.params()["name"]
        if len(name) > 100:
            raise TaskError("name must be at most 100 characters", RpcCode.INVALID_PARAMS,
                            {"field": "name"})
        from django.contrib.auth import get_user_model

        from zephserver.web.models import ApiToken

        user = get_user_model().objects.get(pk=self.request.user.id)
        record, token = ApiToken.issue(user, name, parent=self._calling_token())
        audit("token create", self.request.user, f"token {record.prefix} ({name!r})")
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
    """Revoke one of the caller's tokens (and the tokens made with it).

    Result: {revoked: prefix}.
    Errors: -32005 no active token with that prefix.
    """

    PARAMS: ClassVar[dict[str, Any]] = {"prefix": str}

    def main(self) -> dict:
        prefix = self.params()["prefix"]
        from zephserver.web.models import ApiToken

        count = ApiToken.revoke(self.tokens().filter(prefix=prefix, revoked__isnull=True))
        if not count:
            raise TaskError(f"no active token {prefix!r}", RpcCode.NOT_FOUND,
                            {"field": "prefix"})
        audit("token revoke", self.request.user, f"token {prefix} and {count - 1} made "
              "with it")
        return {"revoked": prefix}
