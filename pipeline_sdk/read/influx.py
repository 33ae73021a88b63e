"""InfluxDB 2 as a read backend: Flux built from the contract, answers streamed by influxdb-client.

The queries are written by :mod:`pipeline_sdk.flux`, the builder the dashboards use too:
every value a caller gives (a run id, a step, a service) is an escaped string literal.

Every query has the same shape, so what it asks is easy to check against the
contract (``tests/test_read_influx.py`` does):

    from(bucket) |> range |> filter(measurement) |> filter(tags) |> filter(fields)
      |> pivot(fields into columns) |> map(exact time as _ns) |> group() |> sort |> limit

and a reduction ends with ``group(columns: by) |> sort(_time) |> last()`` (or
``first``, ``min``, ``max``, ``mean``), a count with ``group(columns: by) |> count()``.
A filter on a tag that older points lack (:data:`.query.ABSENT_TAGS`) that takes
the tag's default also takes them: ``not exists r.attempt or r.attempt == "1"``.

The exact nanosecond time is asked for as an integer column, ``_ns``, because
influxdb-client turns ``_time`` into a datetime, which holds microseconds only.
``query_stream`` parses the annotated CSV as it arrives, so a result of any size is
never held whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .. import flux
from ..flux import Flux
from ..redact import redact, redact_secret, without_userinfo
from .query import ABSENT_TAGS, BackendUnavailable, Count, Reduce, Row, Select

if TYPE_CHECKING:
    from influxdb_client.client.influxdb_client import InfluxDBClient

NS_COLUMN = "_ns"  # the exact time of a row, in Unix nanoseconds (an integer column the query adds)


def _select(query: Select, bucket: str, fields: Iterable[str]) -> Flux:
    return Flux.select(
        query.stream,
        fields=fields,
        time_range=flux.range_ns(query.start_ns, query.stop_ns),
        bucket=bucket,
        equal=query.equal,
        among=query.among,
        absent=ABSENT_TAGS,
    )


def select_flux(query: Select, bucket: str) -> str:
    """The Flux of a :class:`Select`: one row per point, the fields as columns, ``_ns`` its exact time."""
    q = _select(query, bucket, query.fields).pivot_fields()
    q = q.with_column(NS_COLUMN, "int(v: r._time)").group()
    q = q.sort(*([query.order_by] if query.order_by else []), NS_COLUMN, desc=query.desc)
    return (q.limit(query.limit) if query.limit is not None else q).text


def reduce_flux(query: Reduce, bucket: str) -> str:
    """The Flux of a :class:`Reduce`: one row per group, its reduced ``_value``."""
    q = _select(query.select, bucket, [query.value]).group(*query.by).sort("_time", desc=None)
    return q.call(query.agg).keep(*query.by, "_value").text


def count_flux(query: Count, bucket: str) -> str:
    """The Flux of a :class:`Count`: one row per group, its number of points in ``_value``."""
    return (
        _select(query.select, bucket, [query.value])
        .group(*query.by)
        .call("count")
        .keep(*query.by, "_value")
        .text
    )


class InfluxBackend:
    """Answers :class:`Select`, :class:`Reduce` and :class:`Count` from an InfluxDB 2 bucket.

    ``url`` may carry credentials (userinfo, a token in the query): :attr:`url`,
    :meth:`describe` and every error show it with them masked (:mod:`.redact`), and
    an error never quotes ``token``.  Userinfo is dropped before the URL reaches
    influxdb-client, whose HTTP library would ignore it anyway: InfluxDB 2 takes
    the token, in a header.
    """

    def __init__(self, url: str, token: str, org: str, bucket: str, *, timeout_s: float = 30.0) -> None:
        try:
            from influxdb_client.client.influxdb_client import InfluxDBClient  # noqa: PLC0415 - optional
        except ImportError:
            raise BackendUnavailable(
                "reading from InfluxDB needs the influxdb-client package: pip install 'mlobs[influxdb]'"
            ) from None
        raw_url = url.rstrip("/")
        self.url, self.org, self.bucket = redact(raw_url), org, bucket  # the URL as messages show it
        self._token = token
        import urllib3  # noqa: PLC0415 - influxdb-client's HTTP library
        from influxdb_client.client.flux_csv_parser import FluxQueryException  # noqa: PLC0415
        from influxdb_client.rest import ApiException  # noqa: PLC0415

        # what a query can raise: HTTP errors, transport errors, an error table in the answer
        self._errors: tuple[type[BaseException], ...] = (
            ApiException,
            FluxQueryException,
            urllib3.exceptions.HTTPError,
            OSError,
        )
        self._client: InfluxDBClient = InfluxDBClient(
            url=without_userinfo(raw_url), token=token, org=org, timeout=int(timeout_s * 1000)
        )
        self._api = self._client.query_api()

    def describe(self) -> str:
        return f"InfluxDB at {self.url} (org {self.org!r}, bucket {self.bucket!r})"

    def _records(self, flux: str) -> Iterator[dict[str, Any]]:
        try:
            for record in self._api.query_stream(flux, org=self.org):
                yield record.values
        except self._errors as exc:
            raise BackendUnavailable(redact_secret(self._explain(exc), self._token)) from None

    def _explain(self, exc: BaseException) -> str:
        """What went wrong, in words; the caller masks any credential it quotes."""
        status = getattr(exc, "status", None)
        if status is not None:
            body = getattr(exc, "body", None) or ""
            if isinstance(body, bytes):
                body = body.decode("utf-8", "replace")
            message = body
            try:
                import json  # noqa: PLC0415

                message = json.loads(body).get("message", body)
            except (ValueError, AttributeError):
                pass
            hint = {401: "; check MLOBS_INFLUXDB_TOKEN", 404: "; check MLOBS_INFLUXDB_ORG and the bucket"}
            return f"InfluxDB at {self.url} answered HTTP {status}: {message}{hint.get(int(status), '')}"
        if type(exc).__name__ == "FluxQueryException":
            return f"InfluxDB at {self.url} could not run the query: {getattr(exc, 'message', exc)}"
        reason = getattr(exc, "reason", None) or exc
        return f"InfluxDB at {self.url} is unreachable: {type(exc).__name__}: {reason}"

    def select(self, query: Select) -> Iterator[Row]:
        stream = query.stream
        for values in self._records(select_flux(query, self.bucket)):
            tags = {t: values[t] for t in stream.tags if values.get(t) not in (None, "")}
            fields = {f: values[f] for f in query.fields if values.get(f) is not None}
            exact = values.get(NS_COLUMN)
            if exact is None:  # not what this query asks for: a proxy, or a changed server
                raise BackendUnavailable(
                    f"InfluxDB at {self.url} answered a row without the {NS_COLUMN} column the query adds"
                )
            yield Row(int(exact), tags, fields)

    def reduce(self, query: Reduce) -> Iterator[tuple[dict[str, str], Any]]:
        for values in self._records(reduce_flux(query, self.bucket)):
            if values.get("_value") is None:
                continue
            yield {t: values[t] for t in query.by if values.get(t) not in (None, "")}, values["_value"]

    def count(self, query: Count) -> Iterator[tuple[dict[str, str], int]]:
        for values in self._records(count_flux(query, self.bucket)):
            if values.get("_value"):
                yield (
                    {t: values[t] for t in query.by if values.get(t) not in (None, "")},
                    int(values["_value"]),
                )

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]
