"""The task contract and the built-in tasks (one module per family)."""

from zephserver.task.base import (
    Request,
    Task,
    TaskError,
    UserInfo,
    allow_anonymous,
    login_required,
    staff_required,
    user_passes_test,
)

__all__ = ["Request", "Task", "TaskError", "UserInfo", "allow_anonymous", "login_required",
           "staff_required", "user_passes_test"]
