"""Exceptions raised by searcher. The CLI turns them into one-line messages and exit codes."""


class SearcherError(Exception):
    """Base class for every error searcher raises on purpose."""

    exit_code = 1


class ConfigError(SearcherError):
    """A setting, flag or config file value is invalid."""

    exit_code = 2


class SourceError(SearcherError):
    """An input file or record cannot be read into documents."""


class ModelError(SearcherError):
    """The embedding model cannot be loaded or used."""


class ModelMismatchError(SearcherError):
    """The model differs from the one the index was built with."""


class IndexNotFoundError(SearcherError):
    """No index exists at the given name or path."""


class DocumentNotFoundError(SearcherError):
    """An index holds no document with the given id."""


class ForbiddenError(SearcherError):
    """The caller's key does not allow this request (the public key searches only, and only some indexes)."""


class IndexExistsError(SearcherError):
    """An index already exists where a new one was to be created."""


class IndexVersionError(SearcherError):
    """The index was written by a searcher whose format this one cannot read."""


class IndexWriteError(SearcherError):
    """The index's files could not be written (disk full, read-only, I/O error); nothing stored was lost."""


class IndexLockedError(SearcherError):
    """Another process kept the index's writer lock for longer than the caller would wait."""


class IndexCorruptError(SearcherError):
    """The files of an index are unreadable or disagree with each other."""


class InputTooLongError(SearcherError):
    """A text is longer than the model takes, where cutting it would change the answer."""

    exit_code = 2


class PlotUnavailableError(SearcherError):
    """Plotting needs matplotlib, which is not installed."""


class OutputError(SearcherError):
    """A result cannot be written where it was asked to go."""


class CalibrationError(SearcherError):
    """No score threshold reaches the requested precision."""


class InvalidFilterError(SearcherError):
    """A metadata filter is not of the form {field: value} or {field: {"in": [values]}}."""

    exit_code = 2


class EmptyQueryError(SearcherError):
    """A query has no text to search for."""

    exit_code = 2


class TuneError(SearcherError):
    """A model cannot be tuned on the data given, or its training failed."""


class TuneRejectedError(SearcherError):
    """The tuned model scored worse than its base on unseen queries, so it was not written."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class ServerBusyError(SearcherError):
    """A request waited longer than the server allows for the requests queued before it."""


class InvalidRecordError(SourceError):
    """A record cannot be stored as it is: too many alternative wordings, fields that are not JSON, text that
    is not Unicode."""
