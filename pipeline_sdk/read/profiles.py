"""Reading data profiles back: a run's baseline by name, and a model's serving profiles over a window.

:class:`ProfileReads` is the part of :class:`~pipeline_sdk.read.ReadClient` that reads the profile
stream (what ``run.log_profile`` and ``ServiceRecorder.log_features`` wrote), through the same
backend questions as everything else, so both backends answer alike.  A profile is whole once every
chunk of it is stored (:mod:`pipeline_sdk.drift.records`); one still missing a chunk is left out.
Needs the ``drift`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import contract as c
from .query import ReadError, Select, time_range
from .runs import RunReads, Time

if TYPE_CHECKING:
    from ..drift.profile import Profile


class ProfileNotFound(ReadError, LookupError):
    """No whole profile of that run and name, or of that model in that window, is stored."""


def _check(arg: str, value: object) -> str:
    if type(value) is not str or not value.strip():
        raise ValueError(f"{arg}={value!r} is invalid: must be a non-empty string")
    return value


class ProfileReads(RunReads):
    """Baseline and serving profiles (a mixin of ReadClient)."""

    def profile(
        self, run_id: str, name: str, *, step: str | None = None, attempt: int | str | None = None
    ) -> Profile:
        """The baseline profile ``name`` the step run logged (``log_profile``); the latest if logged twice."""
        from ..drift.records import PROFILE_FIELDS, assemble  # noqa: PLC0415 - the optional drift extra

        _check("name", name)
        scope = self._scope(run_id, step, attempt)
        rows = self.backend.select(
            Select(c.PROFILE, PROFILE_FIELDS, equal={**scope.equal(), c.TAG_NAME: name})
        )
        found = assemble((row.time_ns, row.tags, row.fields) for row in rows)
        if not found.profiles:
            missing = f" ({found.incomplete} with a chunk missing)" if found.incomplete else ""
            raise ProfileNotFound(
                f"run {run_id!r} has no profile named {name!r}{missing} in {self.describe()}"
            )
        return found.profiles[0][2]

    def serving_profile(
        self,
        model: str,
        version: str | int | None = None,
        *,
        since: Time = None,
        until: Time = None,
        service: str | None = None,
    ) -> Profile:
        """The serving profiles of ``model`` (at ``version``; None: every version) in the window, merged.

        Every replica's profile whose time is in ``[since, until)`` counts, so the result is the
        profile of all the traffic those replicas saw in it.  ``since``/``until`` are as elsewhere:
        a datetime, an ISO time, a duration ago (``"1h"``) or nanoseconds.
        """
        from ..drift.profile import Profile  # noqa: PLC0415 - as above
        from ..drift.records import PROFILE_FIELDS, assemble  # noqa: PLC0415

        equal = {c.TAG_MODEL: _check("model", model)}
        if version is not None:
            if isinstance(version, bool) or not isinstance(version, str | int):
                raise TypeError(f"version must be a str, an int or None, got {type(version).__name__}")
            equal[c.TAG_MODEL_VERSION] = _check("version", str(version))
        if service is not None:
            equal[c.TAG_SERVICE] = _check("service", service)
        start, stop = time_range(since, until)
        rows = self.backend.select(
            Select(c.PROFILE, PROFILE_FIELDS, equal=equal, start_ns=start, stop_ns=stop)
        )
        found = assemble((row.time_ns, row.tags, row.fields) for row in rows)
        if not found.profiles:
            what = f"model {model!r}" + (f" version {version!r}" if version is not None else "")
            raise ProfileNotFound(f"no serving profile of {what} in that window in {self.describe()}")
        merged = Profile()
        for _, _, profile in found.profiles:
            merged = merged.merge(profile)
        return merged
