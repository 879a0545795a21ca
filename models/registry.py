"""Model registry on disk: versioned model cards and artifacts, aliases, checksums.

Layout (see docs/architecture.md)::

    <root>/<name>/<version>/model.json   # model card
    <root>/<name>/<version>/<artifact>   # model.joblib, or a SavedModel directory
    <root>/<name>/aliases.json           # {"production": "3", "challenger": "4"}

Versions are positive integers kept as strings. Writes are atomic: a version directory
is built under a temporary name and renamed into place; ``aliases.json`` is replaced
with ``os.replace``, so a reader never sees a half-written file, and promotions hold a lock
on the model directory, so concurrent ones never drop each other's aliases.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .card import ModelCard
from .errors import (
    ChecksumMismatch,
    InvalidCard,
    ModelNotFound,
    RegistryError,
    SignatureError,
    UnsafeArtifact,
)

__all__ = [
    "ALIASES_FILE",
    "CARD_FILE",
    "CARD_MARKDOWN_FILE",
    "ChecksumMismatch",
    "InvalidCard",
    "ModelCard",
    "ModelNotFound",
    "Registry",
    "RegistryError",
    "SignatureError",
    "UnsafeArtifact",
    "card_signature",
    "default_registry_root",
    "open_registry",
    "render_card_markdown",
    "sha256_path",
    "signing_key_from_env",
]

log = logging.getLogger("models.registry")

CARD_FILE = "model.json"
#: human-readable model card written next to ``model.json``
CARD_MARKDOWN_FILE = "architecture.md"
ALIASES_FILE = "aliases.json"


#: environment variables holding the registry's card-signing key (the file wins)
SIGNING_KEY_ENV = "MODELS_SIGNING_KEY"
SIGNING_KEY_FILE_ENV = "MODELS_SIGNING_KEY_FILE"
SIGNATURE_ALG = "HMAC-SHA256"


def signing_key_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The card-signing key from ``$MODELS_SIGNING_KEY_FILE`` (the file's bytes, one
    trailing newline stripped) or ``$MODELS_SIGNING_KEY``; None when neither is set."""
    env = os.environ if environ is None else environ
    path = env.get(SIGNING_KEY_FILE_ENV)
    if path:
        try:
            key = Path(path).read_bytes()
        except OSError as exc:
            raise RegistryError(f"cannot read the signing key {path}: {exc}") from exc
        key = key[:-1] if key.endswith(b"\n") else key
    else:
        raw = env.get(SIGNING_KEY_ENV)
        key = raw.encode() if raw else None
    if key is not None and len(key) < 16:
        raise RegistryError("the card-signing key must be at least 16 bytes long")
    return key


def _canonical_card(data: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in data.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def card_signature(data: Mapping[str, Any], key: bytes) -> dict[str, str]:
    """The ``signature`` entry of a card: HMAC-SHA256 over the card's canonical JSON
    (every key but ``signature``; the artifact's sha256 is inside, so it is covered)."""
    return {
        "alg": SIGNATURE_ALG,
        "key_id": hashlib.sha256(key).hexdigest()[:12],
        "value": hmac.new(key, _canonical_card(data), hashlib.sha256).hexdigest(),
    }


def default_registry_root() -> Path:
    """``$MODELS_REGISTRY`` or ``models/registry`` under the project root."""
    env = os.environ.get("MODELS_REGISTRY")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "registry"


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory tree (relative paths and contents, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(p.relative_to(path).as_posix().encode() + b"\0")
            with p.open("rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(chunk)
            h.update(b"\0")
        return h.hexdigest()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _md_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return "`" + json.dumps(v, sort_keys=True, default=str) + "`"
    return str(v).replace("|", "/")


def render_card_markdown(card: Mapping[str, Any]) -> str:
    """The model card as markdown (``architecture.md``), for people reading the registry."""
    lines = [
        f"# {card.get('name')} v{card.get('version')}",
        "",
        f"- created: {card.get('created')}",
        f"- framework: {card.get('framework')}",
    ]
    for key in ("candidate", "description", "threshold_strategy", "review_cost"):
        if key in card:
            lines.append(f"- {key.replace('_', ' ')}: {_md_value(card[key])}")
    lines.append(
        f"- decision threshold: {float(card.get('threshold', 0.0)):.6g} (score >= threshold)"
    )
    art = card.get("artifact") or {}
    lines += [
        f"- artifact: `{art.get('file')}` sha256 `{art.get('sha256')}`",
        "",
        "## Features (model input order)",
        "",
        ", ".join(f"`{f}`" for f in card.get("features", [])),
        "",
    ]
    for title, key in (
        ("Evaluation metrics", "metrics"),
        ("Validation metrics", "validation_metrics"),
        ("Training summary", "training"),
        ("Parameters", "params"),
        ("Serving", "serving"),
    ):
        section = card.get(key)
        if not section:
            continue
        lines += [f"## {title}", "", "| key | value |", "| --- | --- |"]
        lines += [f"| {k} | {_md_value(v)} |" for k, v in sorted(section.items())]
        lines.append("")
    if card.get("evaluated_on"):
        lines += [f"Evaluated on: {card['evaluated_on']}.", ""]
    return "\n".join(lines)


#: a model name is a directory name; most filesystems allow 255 bytes
MAX_NAME_BYTES = 255


def _valid_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and bool(name)
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
    )


_FROM_ENV: Any = object()


class Registry:
    """A model registry rooted at a directory (``models/registry`` by default).

    Trust: loading a pickled model runs code, so the registry must be writable only by
    whoever trains. Artifact paths are confined to their version directory; with a
    signing key (``signing_key``, by default from the environment), cards are signed at
    registration and every card read is refused unless its signature matches.
    """

    def __init__(
        self, root: str | os.PathLike[str] | None = None, *, signing_key: Any = _FROM_ENV
    ) -> None:
        self.root = Path(root) if root is not None else default_registry_root()
        self.signing_key: bytes | None = (
            signing_key_from_env() if signing_key is _FROM_ENV else signing_key
        )

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- reading -----------------------------------------------------------
    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def versions(self, name: str) -> list[str]:
        d = self._model_dir(name)
        if not d.is_dir():
            raise ModelNotFound(self._unknown_model_message(name))
        vs = [
            p.name
            for p in d.iterdir()
            if p.is_dir() and p.name.isdigit() and (p / CARD_FILE).is_file()
        ]
        return sorted(vs, key=int)

    def aliases_path(self, name: str) -> Path:
        return self._model_dir(name) / ALIASES_FILE

    def aliases(self, name: str) -> dict[str, str]:
        path = self.aliases_path(name)
        if not path.is_file():
            if not (self.root / name).is_dir():
                raise ModelNotFound(self._unknown_model_message(name))
            return {}
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from exc
        return {str(k): str(v) for k, v in raw.items()}

    def resolve(self, name: str, ref: str | int = "production") -> str:
        """Turn an alias (``production``) or a version number into a version string."""
        ref = str(ref)
        versions = self.versions(name)
        if ref.isdigit():
            if ref in versions:
                return ref
            raise ModelNotFound(
                f"model {name!r} has no version {ref}; versions: {', '.join(versions) or 'none'}"
            )
        if ref == "latest":
            if versions:
                return versions[-1]
            raise ModelNotFound(f"model {name!r} has no versions yet")
        aliases = self.aliases(name)
        if ref in aliases:
            version = aliases[ref]
            if version not in versions:
                raise ModelNotFound(
                    f"alias {name}@{ref} points to version {version}, which does not exist"
                )
            return version
        known = ", ".join(f"{a}->{v}" for a, v in sorted(aliases.items())) or "none"
        raise ModelNotFound(
            f"model {name!r} has no alias {ref!r} (aliases: {known}; versions: "
            f"{', '.join(versions) or 'none'}); promote one with "
            f"`python -m models promote {name} VERSION --alias {ref}`"
        )

    def card(self, name: str, ref: str | int = "production") -> ModelCard:
        version = self.resolve(name, ref)
        path = self.root / name / version / CARD_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read model card {path}: {exc}") from exc
        self._check_signature(data, path)  # first: an altered card is refused as such
        card = ModelCard(data=data, path=path)
        # The card's own name and version must be the directory it was read from.
        if card.name != name or card.version != version:
            raise InvalidCard(
                f"model card {path} names {card.name!r} v{card.version}, not {name!r} "
                f"v{version}; refusing it"
            )
        return card

    def _check_signature(self, data: Any, path: Path) -> None:
        key = self.signing_key
        if key is None:
            return
        if not isinstance(data, dict):
            raise InvalidCard(f"model card {path} is not a JSON object")
        sig = data.get("signature")
        if not isinstance(sig, dict) or not isinstance(sig.get("value"), str):
            raise SignatureError(
                f"refusing {path}: the card is not signed and a signing key is configured "
                f"(sign it with `python -m models sign {data.get('name')} {data.get('version')}`)"
            )
        expected = card_signature(data, key)
        if not hmac.compare_digest(sig["value"], expected["value"]):
            raise SignatureError(
                f"refusing {path}: its signature does not match (the card was altered, or "
                f"signed with another key: key_id {sig.get('key_id')} vs {expected['key_id']})"
            )

    def artifact_path(self, card: ModelCard) -> Path:
        """The artifact's path, confined to the card's version directory: an absolute
        path, a ``..`` component or a symlink that leads out is refused (UnsafeArtifact)
        before anything is opened."""
        version_dir = self._version_dir(card)
        raw = card.artifact_file
        rel = Path(raw)
        if not raw or rel.is_absolute() or ".." in rel.parts or "\0" in raw or "\\" in raw:
            raise UnsafeArtifact(
                f"refusing {card.name} v{card.version}: artifact {raw!r} is not a plain "
                "relative path; it could lead outside its version directory"
            )
        path = version_dir / rel
        inside = version_dir.resolve()
        resolved = path.resolve()
        if resolved == inside or not resolved.is_relative_to(inside):
            raise UnsafeArtifact(
                f"refusing {card.name} v{card.version}: artifact {raw!r} resolves to "
                f"{resolved}, outside {inside}"
            )
        if path.is_dir():  # a SavedModel: no symlink inside may lead out either
            for sub in path.rglob("*"):
                if sub.is_symlink() and not sub.resolve().is_relative_to(inside):
                    raise UnsafeArtifact(
                        f"refusing {card.name} v{card.version}: {sub} links outside {inside}"
                    )
        return path

    def _version_dir(self, card: ModelCard) -> Path:
        if card.path is not None:
            d = card.path.parent
        else:
            if not _valid_name(card.name) or not str(card.version).isdigit():
                raise UnsafeArtifact(f"refusing a card named {card.name!r} v{card.version!r}")
            d = self.root / card.name / card.version
        root = self.root.resolve()
        if not d.resolve().is_relative_to(root):
            raise UnsafeArtifact(f"refusing {card.name} v{card.version}: {d} is outside {root}")
        return d

    def verify(self, card: ModelCard) -> Path:
        """Return the artifact path after checking its sha256 against the card."""
        path = self.artifact_path(card)
        if not path.exists():
            raise RegistryError(f"artifact {path} named by {card.name} v{card.version} is missing")
        actual = sha256_path(path)
        if actual != card.artifact_sha256:
            raise ChecksumMismatch(
                f"refusing {path}: sha256 {actual[:12]}… does not match the card's "
                f"{card.artifact_sha256[:12]}… (artifact modified or corrupt)"
            )
        return path

    def sign(self, name: str, version: str | int) -> ModelCard:
        """(Re-)sign an existing card with the configured key, e.g. after enabling signing
        on a registry whose cards predate it. The card is read unverified: sign only
        cards you trust."""
        key = self.signing_key
        if key is None:
            raise RegistryError(
                f"no signing key: set {SIGNING_KEY_FILE_ENV} or {SIGNING_KEY_ENV} to sign cards"
            )
        version = self.resolve(name, version)
        path = self.root / name / version / CARD_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read model card {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise RegistryError(f"model card {path} is not a JSON object")
        data["signature"] = card_signature(data, key)
        with self._aliases_lock(name):
            _write_json_atomic(path, data)
        log.info("signed model=%s version=%s key_id=%s", name, version, data["signature"]["key_id"])
        return self.card(name, version)

    def load_artifact(self, card: ModelCard) -> Any:
        """Load a joblib artifact after verifying its checksum."""
        import joblib

        return joblib.load(self.verify(card))

    def list(self) -> list[dict[str, Any]]:
        """One row per model version: name, version, aliases, framework, threshold, created."""
        rows = []
        for name in self.models():
            try:
                aliases = self.aliases(name)
                versions = self.versions(name)
            except RegistryError as exc:
                log.warning("skipping model dir %s: %s", name, exc)
                continue
            for v in versions:
                try:
                    card = self.card(name, v)
                except RegistryError as exc:
                    log.warning("skipping model=%s version=%s: %s", name, v, exc)
                    continue
                rows.append(
                    {
                        "name": name,
                        "version": v,
                        "aliases": sorted(a for a, av in aliases.items() if av == v),
                        "framework": card.framework,
                        "threshold": card.data.get("threshold"),
                        "created": card.data.get("created"),
                        "metrics": dict(card.metrics),
                    }
                )
        return rows

    # -- writing -----------------------------------------------------------
    def register(
        self,
        name: str,
        artifact: Any,
        *,
        features: Iterable[str],
        threshold: float,
        framework: str = "sklearn",
        artifact_name: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ModelCard:
        """Write a new version. ``artifact`` is a path (file or directory, copied) or an
        object (saved with joblib as ``model.joblib``)."""
        model_dir = self._model_dir(name, invalid=RegistryError)
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
        try:
            if isinstance(artifact, (str, os.PathLike)):
                src = Path(artifact)
                fname = artifact_name or src.name
                if src.is_dir():
                    shutil.copytree(src, staging / fname)
                else:
                    shutil.copy2(src, staging / fname)
            else:
                import joblib

                fname = artifact_name or "model.joblib"
                joblib.dump(artifact, staging / fname)
            card = {
                "name": name,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "framework": framework,
                "features": list(features),
                "threshold": float(threshold),
                "metrics": dict(metrics or {}),
                "training": dict(training or {}),
                "artifact": {"file": fname, "sha256": sha256_path(staging / fname)},
            }
            card.update(extra or {})
            # Claim the next version number with an atomic rename; retry on a race.
            for _ in range(100):
                existing = [int(v) for v in self._version_dirs(name)]
                version = str(max(existing, default=0) + 1)
                card["version"] = version
                card.pop("signature", None)
                if self.signing_key is not None:
                    card["signature"] = card_signature(card, self.signing_key)
                _write_json_atomic(staging / CARD_FILE, card)
                (staging / CARD_MARKDOWN_FILE).write_text(render_card_markdown(card))
                try:
                    os.rename(staging, model_dir / version)
                except OSError:
                    continue
                log.info("registered model=%s version=%s framework=%s", name, version, framework)
                return self.card(name, version)
            raise RegistryError(f"could not allocate a version for {name!r}")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def promote(self, name: str, version: str | int, alias: str = "production") -> dict[str, str]:
        """Point ``alias`` at ``version`` (atomic rewrite of aliases.json)."""
        version = str(version)
        if version not in self.versions(name):
            raise ModelNotFound(
                f"model {name!r} has no version {version}; versions: {', '.join(self.versions(name))}"
            )
        if not alias or not alias.replace("-", "_").isidentifier() or alias.isdigit():
            raise RegistryError(f"invalid alias {alias!r}")
        if alias == "latest":  # resolve() reads it as the highest version, never as an alias
            raise RegistryError("invalid alias 'latest': it always means the newest version")
        with self._aliases_lock(name):
            aliases = self.aliases(name)
            previous = aliases.get(alias)
            aliases[alias] = version
            _write_json_atomic(self.aliases_path(name), aliases)
        log.info(
            "promoted model=%s alias=%s version=%s previous=%s", name, alias, version, previous
        )
        return aliases

    # -- helpers -----------------------------------------------------------
    @contextlib.contextmanager
    def _aliases_lock(self, name: str) -> Iterator[None]:
        """Serialise read-modify-writes of aliases.json across threads and processes, so
        promoting two aliases at once keeps both. The lock is on the model directory
        itself (flock), so no lock file is left behind."""
        fd = os.open(self.root / name, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _model_dir(self, name: str, invalid: type[RegistryError] = ModelNotFound) -> Path:
        """The directory of model ``name``. A name that is not one plain path component
        (a slash, a leading dot, a NUL, longer than a file name may be) could reach
        outside the registry or fail in the filesystem, so it is refused up front.
        Reads raise ModelNotFound (an API or a TICKscript may pass any string);
        register raises RegistryError."""
        if not _valid_name(name):
            raise invalid(
                f"invalid model name {str(name)[:80]!r}: use one path component of at most "
                f"{MAX_NAME_BYTES} bytes, without '/' and not starting with '.'"
            )
        return self.root / name

    def _version_dirs(self, name: str) -> list[str]:
        d = self.root / name
        return (
            [p.name for p in d.iterdir() if p.is_dir() and p.name.isdigit()] if d.is_dir() else []
        )

    def _unknown_model_message(self, name: str) -> str:
        known = ", ".join(self.models()) or "none"
        return f"unknown model {name!r} in registry {self.root} (known models: {known})"


def open_registry(
    root: str | os.PathLike[str] | None = None, mlflow_tracking_uri: str | None = None
) -> Registry:
    """The file registry at ``root``, or, with an MLflow tracking URI, MLflow's model
    registry with ``root`` as its download cache."""
    if mlflow_tracking_uri:
        from .mlflow_registry import MlflowRegistry

        return MlflowRegistry(
            mlflow_tracking_uri, root if root is not None else default_registry_root()
        )
    return Registry(root)
