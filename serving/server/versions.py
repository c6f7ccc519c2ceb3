"""The version manager: the state machine of one model's versions (LOADING, AVAILABLE, UNLOADING, END).

`ModelManager` loads, warms up, serves and unloads the versions as the model folder, the model config file and
config reloads change, load before unload, and resolves each request's ModelSpec against what is served.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2

from serving.model_config import VersionConfig, parse_model_config
from serving.push import list_versions
from serving.server.codecs import RequestError, grpc_code
from serving.server.config import ServerConfig
from serving.server.signatures import LoadedVersion, load_version
from serving.server.warmup import run_warmup

log = logging.getLogger(__name__)

_STATE = get_model_status_pb2.ModelVersionStatus.State


@dataclass(frozen=True)
class _Serving:
    """What requests resolve against, replaced as a whole so that a label and its version are read together."""

    available: dict[int, LoadedVersion]  # version -> loaded version
    labels: dict[str, int]  # label -> version


def _policy_text(num_versions: int, specific_versions: tuple[int, ...]) -> str:
    return f"specific {list(specific_versions)}" if specific_versions else f"latest {num_versions}"


class ModelManager:
    """The versions of one model: loads, warms up, serves and unloads them as the folder (and config) change."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.model_dir = Path(config.base_path) / config.model_name
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()  # one poll or reload at a time
        self._num_versions = config.num_versions
        self._specific_versions = tuple(config.specific_versions)
        # With a config file, labels come from it (checked against the available versions) on the first poll.
        labels = {} if config.model_config_file else dict(config.version_labels)
        self._serving = _Serving({}, labels)  # replaced, never mutated: readers take a snapshot
        self._states: dict[int, tuple[int, int, str]] = {}  # version -> (state, error code, message)
        self._failed: set[tuple[Path, int]] = set()  # (resolved model folder, version) that failed to load
        self._config_text: str | None = None  # the config file as last read
        self._refused_labels: str | None = None  # the last refusal logged, so that it is logged once
        self.on_change = lambda available: None  # called with the available versions after each change

    @property
    def _available(self) -> dict[int, LoadedVersion]:
        return self._serving.available

    @property
    def version_labels(self) -> dict[str, int]:
        """The labels in force."""
        return dict(self._serving.labels)

    def available_versions(self) -> list[int]:
        return sorted(self._available)

    def poll(self, read_config: bool = True) -> None:
        """One pass: re-read the config file (with `read_config`), load new aspired versions, apply labels, unload
        the rest. Without `read_config` the policy and labels in force stay."""
        with self._poll_lock:
            self._poll(self._read_config_file() if read_config else None)

    def reload_config(self, model) -> tuple[grpc.StatusCode, str]:
        """ModelService.HandleReloadConfigRequest for this server's model: take the version policy, labels and
        base path of `model` (a `tensorflow.serving.ModelConfig`) and load, label and unload accordingly.

        It runs the same pass as a poll (`_transition`): the versions the policy aspires to in the (new) folder
        are loaded and warmed up first, then served in place of the others in one step, so requests keep being
        answered by the versions in force until the new ones are AVAILABLE.

        - A version the policy names that is not on disk (or a new base path with no versions yet) is awaited,
          as TF Serving does: the config is accepted (OK), the versions in force keep serving, and the version
          is loaded by the poll once it appears. This holds on the same base path and on a new one.
        - Labels must name versions that will be AVAILABLE once the reload is done, i.e. versions the new
          policy keeps and that load: otherwise the reload is refused with FAILED_PRECONDITION naming the label
          and version, and nothing changes (base path, policy and labels in force stay; versions loaded for it
          are let go).
        - A new base path whose versions all fail to load is refused too (the error of the load), keeping the
          base path in force.

        Returns:
            The status code and message of the outcome (OK and "" when everything took effect).
        """
        if self.config.model_config_file is not None:
            return (grpc.StatusCode.FAILED_PRECONDITION,
                    f"This server follows the model config file {self.config.model_config_file}; edit it instead")  # fmt: skip
        try:
            policy = VersionConfig.from_proto(model, "ReloadConfigRequest")
        except ValueError as error:
            return grpc.StatusCode.INVALID_ARGUMENT, str(error)
        model_dir = Path(model.base_path) if model.base_path else self.model_dir
        with self._poll_lock:
            self._refused_labels = None
            code, message = self._transition(model_dir, policy.num_versions, policy.specific_versions,
                                             policy.labels, strict=True)  # fmt: skip
        if code is grpc.StatusCode.OK:
            log.info("Reloaded the config of %s: %s, %s, labels %s", self.config.model_name, model_dir,
                     _policy_text(policy.num_versions, policy.specific_versions), policy.labels)  # fmt: skip
        else:
            log.error("Refused a config reload of %s: %s", self.config.model_name, message)
        return code, message

    def _poll(self, wanted_labels: dict[str, int] | None) -> None:
        self._transition(self.model_dir, self._num_versions, self._specific_versions, wanted_labels, strict=False)

    def _aspired(self, model_dir: Path, num_versions: int, specific: tuple[int, ...]) -> tuple[list[int], list[int]]:
        """The versions on disk in `model_dir` and those the version policy aspires to load, oldest first."""
        on_disk = list_versions(model_dir.parent, model_dir.name)
        if specific:
            return on_disk, [v for v in on_disk if v in specific]
        return on_disk, on_disk[-num_versions:]

    def _transition(self, model_dir: Path, num_versions: int, specific: tuple[int, ...],
                    wanted_labels: dict[str, int] | None, strict: bool) -> tuple[grpc.StatusCode, str]:  # fmt: skip
        """One pass of the poll or of a reload: load what the policy aspires to in `model_dir`, then serve it,
        with the labels, in place of the rest in one step (load before unload).

        Versions loaded from another folder (the base path before a reload) keep serving until a version of
        `model_dir` is ready. `wanted_labels` None keeps the labels in force. With `strict` (a reload) labels that
        would not name an AVAILABLE version refuse the whole pass and nothing changes; otherwise (a poll) such
        labels are refused and logged, and the policy still takes effect. Returns the outcome.
        """
        here = model_dir.resolve()
        serving = self._serving
        on_disk, aspired = self._aspired(model_dir, num_versions, specific)
        labels = serving.labels if wanted_labels is None else wanted_labels
        if strict:
            not_aspired = {label: v for label, v in labels.items() if v not in aspired}
            if not_aspired:
                return grpc.StatusCode.FAILED_PRECONDITION, self._label_refusal(labels, not_aspired, serving.labels)
        own = {v: m for v, m in serving.available.items() if m.path.parent.resolve() == here}
        loaded: dict[int, LoadedVersion] = {}
        errors: list[str] = []
        for version in aspired:
            if version in own:
                continue
            if (here, version) in self._failed:  # not tried again; a reload still counts it as an error
                if strict:
                    errors.append(f"version {version} of {model_dir} failed to load before (see the server log)")
                continue
            model = self._load(model_dir, version)
            if model is None:
                errors.append(self._states[version][2])
            else:
                loaded[version] = model
        candidates = {**own, **loaded}
        if specific:
            keep = [v for v in sorted(candidates) if v in aspired]
        else:
            keep = [v for v in sorted(candidates) if v in on_disk][-num_versions:]
        if not keep and own:  # nothing the policy wants is loadable yet: the versions in force keep serving
            if not on_disk:
                log.warning("No versions of %s on disk; keeping %s loaded", self.config.model_name, sorted(own))
            keep = sorted(own)
        # Nothing of `model_dir` to serve yet (a new base path, awaited versions): the versions in force stay.
        available = {v: candidates[v] for v in keep} if keep else dict(serving.available)
        unavailable = {label: v for label, v in labels.items() if v not in available}
        refusal = None
        if strict and unavailable:
            refusal = self._label_refusal(labels, unavailable, serving.labels)
        elif strict and not keep and errors and here != self.model_dir.resolve():
            refusal = f"Could not load {model_dir}; keeping {self.model_dir}: {'; '.join(errors)}"
        if refusal is not None:
            for version in loaded:  # let go of what was loaded for the refused reload
                if version not in serving.available:
                    self._set_state(version, _STATE.END, 0, "Unloaded: the config reload was refused")
            self._restore_states(serving)
            code = grpc.StatusCode.UNKNOWN if not unavailable else grpc.StatusCode.FAILED_PRECONDITION
            return code, refusal
        if unavailable:  # a poll: the policy takes effect, the labels in force stay
            if labels != serving.labels:
                message = self._label_refusal(labels, unavailable, serving.labels)
            else:  # (a version removed from disk, or a policy change by the config file)
                message = f"Version labels of {self.config.model_name} name versions no longer served: {unavailable}"
            if message != self._refused_labels:
                log.error(message)
                self._refused_labels = message
            labels = serving.labels
        self._commit(_Serving(available, dict(labels)))
        self._restore_states(self._serving)
        self.model_dir = model_dir
        self._num_versions, self._specific_versions = num_versions, tuple(specific)
        return grpc.StatusCode.OK, ""

    def _restore_states(self, serving: _Serving) -> None:
        """Report the served versions AVAILABLE (a version of another folder with the same number may have been
        reported LOADING or END meanwhile)."""
        for version in serving.available:
            if self._states.get(version, (None,))[0] != _STATE.AVAILABLE:
                self._set_state(version, _STATE.AVAILABLE)

    def _label_refusal(self, labels: dict[str, int], bad: dict[str, int], in_force: dict[str, int]) -> str:
        names = ", ".join(f"{label} -> version {version}" for label, version in sorted(bad.items()))
        return (f"Refusing version labels {labels} of {self.config.model_name}: {names} would not be AVAILABLE; "
                f"keeping {in_force}")  # fmt: skip

    def _commit(self, new: _Serving) -> None:
        """Serve `new` in place of what is served, in one step; report the versions that ended or started."""
        old = self._serving
        same_versions = new.available.keys() == old.available.keys() and all(
            new.available[v] is old.available[v] for v in new.available
        )
        if same_versions and new.labels == old.labels:
            return
        with self._lock:
            self._serving = new
        for version, model in sorted(old.available.items()):
            if new.available.get(version) is not model:
                self._set_state(version, _STATE.END)
                log.info("Unloaded %s version %d from %s", self.config.model_name, version, model.path.parent)
        for version, model in sorted(new.available.items()):
            if old.available.get(version) is not model:
                self._set_state(version, _STATE.AVAILABLE)
                log.info("%s version %d AVAILABLE (%d warm-up requests) from %s", self.config.model_name, version,
                         model.warmup_requests, model.path.parent)  # fmt: skip
        if new.labels != old.labels:
            log.info("Version labels of %s: %s", self.config.model_name, new.labels)
        if not same_versions:
            self.on_change(self.available_versions())

    def _read_config_file(self) -> dict[str, int] | None:
        """Take the version policy from the config file; return its labels (None without a file or when
        the file cannot be read: the policy and labels in force stay)."""
        path = self.config.model_config_file
        if path is None:
            return None
        try:
            text = Path(path).read_text()
            changed = text != self._config_text
            _, model = parse_model_config(text, self.config.model_name, path)
            policy = VersionConfig.from_proto(model, path)
        except (OSError, ValueError) as error:
            if self._config_text != "":
                log.error("Cannot read the model config %s; keeping the policy and labels in force: %s", path, error)
            self._config_text = ""
            return None
        self._config_text = text
        if changed:
            if Path(model.base_path).resolve() != self.model_dir.resolve():
                log.warning("The model config moved base_path to %s; this server keeps serving %s",
                            model.base_path, self.model_dir)  # fmt: skip
            if (policy.num_versions, policy.specific_versions) != (self._num_versions, self._specific_versions):
                log.info("Version policy of %s from %s: %s", self.config.model_name, path,
                         _policy_text(policy.num_versions, policy.specific_versions))  # fmt: skip
            self._num_versions = policy.num_versions
            self._specific_versions = policy.specific_versions
        return policy.labels

    def _load(self, model_dir: Path, version: int) -> LoadedVersion | None:
        """Load and warm up a version of `model_dir` (LOADING while it runs); it is served by `_commit`.

        A failure is logged, reported END with its error and recorded so that the version is never retried.
        """
        path = model_dir / str(version)
        self._set_state(version, _STATE.LOADING)
        log.info("Loading %s version %d from %s", self.config.model_name, version, path)
        started = time.monotonic()
        try:
            loaded = load_version(path, version)
            warmed = loaded.warmup_requests = run_warmup(loaded, self.config.model_name)
        except Exception as error:  # noqa: BLE001  (whatever breaks a version, the others keep serving)
            self._failed.add((model_dir.resolve(), version))
            code = error.code if isinstance(error, RequestError) else grpc.StatusCode.UNKNOWN
            if isinstance(error, tf.errors.OpError):
                code = grpc_code(error.error_code)
            self._set_state(version, _STATE.END, code.value[0], f"Failed to load version {version}: {error}")
            log.error("Loading %s version %d failed (%s); keeping %s: %s", self.config.model_name, version,
                      path, self.available_versions(), error)  # fmt: skip
            return None
        log.info("Loaded %s version %d (%.1f s, %d warm-up requests)", self.config.model_name, version,
                 time.monotonic() - started, warmed)  # fmt: skip
        return loaded

    def _unload(self, version: int) -> None:
        self._set_state(version, _STATE.UNLOADING)
        with self._lock:
            available = {v: m for v, m in self._serving.available.items() if v != version}
            self._serving = _Serving(available, self._serving.labels)
        self._set_state(version, _STATE.END)
        log.info("Unloaded %s version %d", self.config.model_name, version)

    def _set_state(self, version: int, state: int, error_code: int = 0, message: str = "") -> None:
        with self._lock:
            self._states[version] = (state, error_code, message)

    def unload_all(self) -> None:
        for version in self.available_versions():
            self._unload(version)

    def resolve(self, model_spec) -> LoadedVersion:
        """The loaded version a ModelSpec asks for.

        Raises:
            RequestError: NOT_FOUND (unknown model, version not loaded), INVALID_ARGUMENT (unknown label).
        """
        name = model_spec.name
        serving = self._serving  # one snapshot: a label and the versions it may name
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version_label":
            label = model_spec.version_label
            if name != self.config.model_name or label not in serving.labels:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
            version = serving.labels[label]
        elif choice == "version":
            version = model_spec.version.value
        else:
            version = None
        available = serving.available
        if name == self.config.model_name:
            if version is None and available:
                return available[max(available)]
            if version in available:
                return available[version]
        request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")

    def status(self, model_spec) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus: every version seen, or the one asked for."""
        name = model_spec.name
        with self._lock:
            states = dict(self._states)
        if name != self.config.model_name or not states:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version_label":
            labels = self._serving.labels
            if model_spec.version_label not in labels:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {model_spec.version_label}"
                )
            versions = [labels[model_spec.version_label]]
        elif choice == "version":
            versions = [model_spec.version.value]
        else:
            versions = sorted(states, reverse=True)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in versions:
            if version not in states:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
            state, error_code, message = states[version]
            entry = response.model_version_status.add(version=version, state=state)
            entry.status.error_code = error_code
            entry.status.error_message = message
        return response
