"""Lazy results: :class:`Rows` reads its backend when iterated, in batches, never whole."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped, unused-ignore]

T = TypeVar("T")


class Rows:
    """A lazy result: iterate for dicts, ``batches()`` for lists, ``frames()`` for DataFrames.

    Each iteration reads the backend again; ``collect()`` gives a pandas DataFrame
    when pandas is installed, else a list of dicts.
    """

    def __init__(self, produce: Callable[[], Iterator[dict[str, Any]]], columns: Sequence[str]) -> None:
        self._produce = produce
        self.columns: tuple[str, ...] = tuple(columns)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._produce()

    def batches(self, size: int = 10_000) -> Iterator[list[dict[str, Any]]]:
        """Lists of at most ``size`` rows; only one batch is held at a time."""
        if type(size) is not int or size < 1:
            raise ValueError(f"size={size!r} is invalid: must be a whole number, 1 or more")
        return chunks(self, size)

    def frames(self, size: int = 100_000) -> Iterator[pandas.DataFrame]:
        """pandas DataFrames of at most ``size`` rows (pip install 'mlobs[pandas]')."""
        pd = _pandas()
        for batch in self.batches(size):
            yield pd.DataFrame.from_records(batch, columns=self._columns_of(batch))

    def to_list(self) -> list[dict[str, Any]]:
        return list(self)

    def to_pandas(self) -> pandas.DataFrame:
        """Every row in one DataFrame (pip install 'mlobs[pandas]')."""
        pd = _pandas()
        rows = self.to_list()
        return pd.DataFrame.from_records(rows, columns=self._columns_of(rows))

    def collect(self) -> pandas.DataFrame | list[dict[str, Any]]:
        """A DataFrame when pandas is installed, else a list of dicts."""
        try:
            _pandas()
        except ImportError:
            return self.to_list()
        return self.to_pandas()

    def _columns_of(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        extra = dict.fromkeys(k for row in rows for k in row if k not in self.columns)
        return [*self.columns, *extra]


def _pandas() -> Any:
    try:
        import pandas  # noqa: PLC0415 - an optional extra

        return pandas
    except ImportError:
        raise ImportError("DataFrames need pandas: pip install 'mlobs[pandas]' (or use to_list())") from None


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of at most ``size`` items, only one held at a time."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def limited(rows: Iterable[T], limit: int | None) -> Iterator[T]:
    """The first ``limit`` of ``rows`` (all of them for None), read no further."""
    for n, row in enumerate(rows):
        if limit is not None and n >= limit:
            return
        yield row
