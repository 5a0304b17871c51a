"""Exceptions that carry a plain reason a user can act on."""


class FaceveilError(Exception):
    """Base class: the message is shown to the user as is."""


class InputError(FaceveilError):
    """One input cannot be processed; it is recorded as failed and gets no output file."""


class UsageError(FaceveilError):
    """Bad options or configuration, found before any work starts (exit code 2)."""


class MissingExtraError(UsageError):
    """An optional dependency is not installed; the message names the pip command to run."""

    def __init__(self, what: str, extra: str, package: str | None = None) -> None:
        hint = f"pip install 'faceveil[{extra}]'" if package is None else f"pip install {package}"
        super().__init__(f"{what} needs an optional dependency that is not installed: run `{hint}`")
