"""The one exception tree of radshare.

Every error the project raises on purpose is a ``RadshareError``. User-facing
errors name the file, the field and the offending value::

    RadshareError
    ├── ConfigError            bad option, config file or CLI value
    ├── DataError              input data that cannot be used
    │   ├── ImageDecodeError   an image file that cannot be read or decoded
    │   ├── LabelError         unknown label, bad label file or label-space mismatch
    │   └── SplitError         a split that cannot be made (too few patients, ...)
    ├── CacheError             a preprocessing cache that is missing, stale or corrupt
    ├── TrainingError          training cannot start or go on (bad checkpoint, ...)
    │   └── PrivacyBudgetExhaustedError  the DP budget is spent
    ├── ArtifactError          a bundle or manifest that fails validation
    │   ├── IntegrityError     a sha256 that does not match
    │   ├── SignatureError     a missing or invalid Ed25519 signature
    │   └── UnsafeArtifactError  a file that is not safetensors/JSON (e.g. a pickle)
    ├── RegistryError          the hub's registry refused or failed an operation
    │   ├── NotFoundError      no such generator, labeller or archive
    │   ├── PermissionDeniedError  the caller's role does not allow it
    │   ├── QuotaError         upload size or concurrency limit reached
    │   │   └── BusyError      a limit that frees itself (slots, staged bytes): retry later
    │   ├── UploadInterruptedError  an upload that is incomplete or busy: resume it
    │   ├── RegistryUnavailableError  the registry database is missing, unreadable or corrupt
    │   └── DataLossError      a stored blob is missing or no longer matches its sha256
    ├── AuditError             an audit that cannot run, or a failed pre-publication gate
    │   └── AuditPolicyError   the hub's audit policy refuses a generator for synthesis
    └── FederationError        a federated task failed or a site was unavailable
        └── QueryRefusedError  a site refused a query outside its query policy
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "AuditError",
    "AuditPolicyError",
    "BusyError",
    "CacheError",
    "ConfigError",
    "DataError",
    "DataLossError",
    "FederationError",
    "ImageDecodeError",
    "IntegrityError",
    "LabelError",
    "NotFoundError",
    "PermissionDeniedError",
    "PrivacyBudgetExhaustedError",
    "QueryRefusedError",
    "QuotaError",
    "RadshareError",
    "RegistryError",
    "RegistryUnavailableError",
    "SignatureError",
    "SplitError",
    "TrainingError",
    "UnsafeArtifactError",
    "UploadInterruptedError",
]


class RadshareError(Exception):
    """Base of every error radshare raises on purpose."""


class ConfigError(RadshareError):
    """A bad option, config file or command-line value."""


class DataError(RadshareError):
    """Input data that cannot be used."""


class ImageDecodeError(DataError):
    """An image file that cannot be read or decoded."""


class LabelError(DataError):
    """An unknown label, a bad label file or a label-space mismatch."""


class SplitError(DataError):
    """A train/val/test split that cannot be made."""


class CacheError(RadshareError):
    """A preprocessing cache that is missing, stale or corrupt."""


class TrainingError(RadshareError):
    """Training that cannot start or go on."""


class PrivacyBudgetExhaustedError(TrainingError):
    """The differential-privacy budget is spent."""


class ArtifactError(RadshareError):
    """A bundle or manifest that fails validation."""


class IntegrityError(ArtifactError):
    """A sha256 that does not match the manifest."""


class SignatureError(ArtifactError):
    """A missing or invalid Ed25519 signature."""


class UnsafeArtifactError(ArtifactError):
    """A file that is not safetensors or JSON (a pickle, for instance)."""


class RegistryError(RadshareError):
    """The hub's registry refused or failed an operation."""


class NotFoundError(RegistryError):
    """No such generator, labeller or archive."""


class PermissionDeniedError(RegistryError):
    """The caller's role does not allow the operation."""


class QuotaError(RegistryError):
    """An upload size or concurrency limit was reached."""


class BusyError(QuotaError):
    """A limit that frees itself (upload slots in use, staged bytes): retry after a while."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UploadInterruptedError(RegistryError):
    """An upload that ended before every byte arrived, or is busy in another stream: resume it."""


class RegistryUnavailableError(RegistryError):
    """The registry's database is missing, unreadable or corrupt: restore a backup or verify."""


class DataLossError(RegistryError):
    """A stored blob is missing or no longer matches its sha256 (``radshare-hub verify``)."""


class AuditError(RadshareError):
    """An audit that cannot run, or a failed pre-publication gate."""


class AuditPolicyError(AuditError):
    """The hub's audit policy refuses a generator for synthesis (failed, missing, stale, ...)."""


class FederationError(RadshareError):
    """A federated task failed or a site was unavailable."""


class QueryRefusedError(FederationError):
    """A site refused a federated query outside its query policy (the rule, value and limit)."""

    def __init__(self, rule: str, message: str):
        super().__init__(f"refused by rule {rule}: {message}")
        self.rule = rule
