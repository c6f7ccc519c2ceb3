"""The data rules, each written once: rendered to SQL (DuckDB, exact over every row) and to Great Expectations.

A `Rule` says what every row of a column (or a set of columns) must satisfy. `Rule.violated` renders it to the
SQL condition of the rows that break it, which `raw_source.check` and `snapshot_validation` count over whole
tables; `Rule.expectation` renders it to the Great Expectations expectation that `validation` runs on a batch in
memory (its Data Docs quote the bad values). Two tables of rules, both derived from the feature spec:

- `SOURCE_RULES`, per raw table (`events`, `users`, `movies`): null keys, ratings 1..5, no future timestamps,
  events of known users and movies, unique keys and events, the profile codes' closed domains and ranges.
- `SNAPSHOT_RULES`, over a training snapshot: every feature non-null, in its range or closed domain; the event
  columns; rated rows (`picked` 1) rated 1..5, sampled rows (`picked` 0) with rating and label 0.

What only one side can say stays with it: column presence and types (`raw_source`'s schema check, the suites'
`expect_column_to_exist` and type expectations), table-level bands (row counts, label rates, drift) and the
run's day having events.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from deepfm_model.spec.features import (
    EVENT_TIMESTAMP,
    FEATURES,
    FEATURES_BY_NAME,
    LABEL,
    MOVIE_KEY,
    MULTI_VALUE_SEPARATOR,
    PICKED,
    RATING,
    USER_KEY,
    Feature,
    Kind,
)
from feature_repo import sql

EVENT_KEY = (USER_KEY, MOVIE_KEY, EVENT_TIMESTAMP)  # one rating event; twice means the feed replayed it
RATED, SAMPLED = (PICKED, 1), (PICKED, 0)  # rated rows (events) and sampled "not picked" rows (`negatives`)
RowSubset = tuple[str, int]  # the rows where (column, value): RATED or SAMPLED
MIN_RATING, MAX_RATING = 1, 5


class Check(enum.Enum):
    """What a rule requires of each row."""

    NOT_NULL = "not null"
    BETWEEN = "between"
    IN_SET = "in set"
    MATCHES = "matches"
    UNIQUE = "unique"
    KNOWN = "known"
    NOT_AFTER = "not after"


# The first word of a rule's name: what its count counts.
_PREFIX = {Check.NOT_NULL: "null", Check.BETWEEN: "out_of_range", Check.IN_SET: "unknown", Check.MATCHES: "unknown",
           Check.UNIQUE: "repeated", Check.KNOWN: "unknown_id", Check.NOT_AFTER: "future"}  # fmt: skip


@dataclass(frozen=True)
class Rule:
    """One rule over `columns` (one column but for `UNIQUE`).

    Attributes:
        check: what each row must satisfy.
        columns: the column, or the key columns of `UNIQUE`.
        low, high: `BETWEEN`'s bounds (either may be None).
        values: `IN_SET`'s allowed values.
        pattern: `MATCHES`'s regex (anchored; Python and RE2 alike).
        references: `KNOWN`'s table, whose key of the same name the value must be.
        nan_is_null: `NOT_NULL` counts NaN as null (numeric columns; pandas does so in memory).
        only: the rule holds on the rows where (column, value); the others are left alone.
    """

    check: Check
    columns: tuple[str, ...]
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()
    pattern: str = ""
    references: str = ""
    nan_is_null: bool = False
    only: RowSubset | None = None

    @property
    def column(self) -> str:
        return self.columns[0]

    @property
    def reads(self) -> set[str]:
        """Every column the rule reads."""
        return {*self.columns, *([self.only[0]] if self.only else [])}

    @property
    def name(self) -> str:
        """`null_rating`, `out_of_range_rating_where_picked_1`, ...: the figure's name in a one-row batch."""
        suffix = f"_where_{self.only[0]}_{self.only[1]}" if self.only else ""
        return f"{_PREFIX[self.check]}_{'_'.join(self.columns)}{suffix}"

    @property
    def what(self) -> str:
        """What the breaking rows are, for a message: "null", "outside 1..5", ..."""
        if self.check is Check.BETWEEN:
            return f"outside {_bound(self.low)}..{_bound(self.high)}"
        if self.check in (Check.IN_SET, Check.MATCHES):
            return "outside the allowed values"
        if self.check is Check.KNOWN:
            return f"not a {self.column} of `{self.references}`"
        return {Check.NOT_NULL: "null", Check.NOT_AFTER: "in the future", Check.UNIQUE: "repeated"}[self.check]

    def violated(self, now: object = None) -> str:
        """The SQL condition of the rows that break the rule (`UNIQUE`: see `repeated_keys`).

        Args:
            now: `NOT_AFTER`'s instant.
        """
        column = sql.name(self.column)
        if self.check is Check.NOT_NULL:
            condition = f"{column} IS NULL" + (f" OR isnan(CAST({column} AS DOUBLE))" if self.nan_is_null else "")
        elif self.check is Check.BETWEEN:
            bounds = [f"{column} < {self.low!r}" if self.low is not None else "",
                      f"{column} > {self.high!r}" if self.high is not None else ""]  # fmt: skip
            condition = " OR ".join(bound for bound in bounds if bound)
        elif self.check is Check.IN_SET:
            condition = f"{column} NOT IN ({', '.join(sql.literal(v) for v in self.values)})"
        elif self.check is Check.MATCHES:
            condition = f"NOT regexp_full_match({column}, {sql.literal(self.pattern)})"
        elif self.check is Check.KNOWN:
            table = sql.name(self.references)
            condition = f"{column} NOT IN (SELECT {column} FROM {table} WHERE {column} IS NOT NULL)"
        elif self.check is Check.NOT_AFTER:
            condition = f"{column} > {sql.instant(now)}"
        else:
            raise ValueError(f"{self.name}: a UNIQUE rule is counted by `repeated_keys`, not a row condition")
        return f"({condition}) AND {where_sql(self.only)}" if self.only else condition

    def repeated_keys(self, table: str) -> str:
        """`UNIQUE`: SQL of the repeated keys of `table` (the only rows), with how many `times` each."""
        keys = ", ".join(sql.name(c) for c in self.columns)
        where = f" WHERE {where_sql(self.only)}" if self.only else ""
        return f"SELECT {keys}, count(*) AS times FROM {table}{where} GROUP BY ALL HAVING count(*) > 1"

    def expectation(self, now: object = None, ids: dict[str, list[str]] | None = None) -> Any:
        """The Great Expectations expectation of the rule.

        Args:
            now: `NOT_AFTER`'s instant.
            ids: `KNOWN`: per referenced table, its keys.
        """
        import great_expectations.expectations as gxe

        condition = {"row_condition": where_pandas(self.only), "condition_parser": "pandas"} if self.only else {}
        column = self.column
        if self.check is Check.NOT_NULL:
            return gxe.ExpectColumnValuesToNotBeNull(column=column, **condition)
        if self.check is Check.BETWEEN:
            return gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=self.low, max_value=self.high, **condition
            )
        if self.check is Check.IN_SET:
            return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(self.values), **condition)
        if self.check is Check.MATCHES:
            return gxe.ExpectColumnValuesToMatchRegex(column=column, regex=self.pattern, **condition)
        if self.check is Check.KNOWN:
            return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=(ids or {})[self.references], **condition)
        if self.check is Check.NOT_AFTER:
            return gxe.ExpectColumnValuesToBeBetween(column=column, max_value=now, **condition)
        if len(self.columns) == 1:
            return gxe.ExpectColumnValuesToBeUnique(column=column, **condition)
        return gxe.ExpectCompoundColumnsToBeUnique(column_list=list(self.columns), **condition)


def where_sql(rows: RowSubset) -> str:
    """The SQL condition of a row subset."""
    return f"{sql.name(rows[0])} = {rows[1]!r}"


def where_pandas(rows: RowSubset) -> str:
    """The pandas row condition (Great Expectations' `row_condition`) of a row subset."""
    return f"{rows[0]}=={rows[1]!r}"


def _bound(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def genres_regex(allowed: tuple[str, ...], separator: str = MULTI_VALUE_SEPARATOR) -> str:
    """Regex of a multi-valued field: allowed tokens joined by `separator`, or the empty string (no value)."""
    token = "(?:" + "|".join(re.escape(value) for value in allowed) + ")"
    return rf"^(?:{token}(?:{re.escape(separator)}{token})*)?$"


def domain_rule(column: str, feature: Feature) -> Rule | None:
    """The range or closed-domain rule of `feature`'s values, read from `column`; None when it has neither."""
    if feature.kind is Kind.NUMERIC and (feature.min_value is not None or feature.max_value is not None):
        return Rule(Check.BETWEEN, (column,), low=feature.min_value, high=feature.max_value)
    if feature.allowed is not None and feature.kind is Kind.MULTI_CATEGORICAL:
        return Rule(Check.MATCHES, (column,), pattern=genres_regex(feature.allowed))
    if feature.allowed is not None:
        return Rule(Check.IN_SET, (column,), values=tuple(feature.allowed))
    return None


def _not_null(*columns: str) -> list[Rule]:
    return [Rule(Check.NOT_NULL, (column,)) for column in columns]


def _profile(columns: tuple[str, ...]) -> list[Rule]:
    return [rule for c in columns if (rule := domain_rule(c, FEATURES_BY_NAME[c])) is not None]


_RATING_RANGE = Rule(Check.BETWEEN, (RATING,), low=MIN_RATING, high=MAX_RATING)
SOURCE_RULES: dict[str, tuple[Rule, ...]] = {
    "events": (
        *_not_null(USER_KEY, MOVIE_KEY, RATING, EVENT_TIMESTAMP),
        _RATING_RANGE,
        Rule(Check.NOT_AFTER, (EVENT_TIMESTAMP,)),
        Rule(Check.KNOWN, (USER_KEY,), references="users"),
        Rule(Check.KNOWN, (MOVIE_KEY,), references="movies"),
        Rule(Check.UNIQUE, EVENT_KEY),
    ),
    "users": (*_not_null(USER_KEY, "age"), Rule(Check.UNIQUE, (USER_KEY,)), *_profile(("age", "gender", "occupation"))),
    "movies": (*_not_null(MOVIE_KEY), Rule(Check.UNIQUE, (MOVIE_KEY,)), *_profile(("release_year", "genres"))),
}

SNAPSHOT_RULES: tuple[Rule, ...] = (
    *(
        rule
        for feature in FEATURES
        for rule in (
            Rule(Check.NOT_NULL, (feature.name,), nan_is_null=feature.kind is Kind.NUMERIC),
            domain_rule(feature.name, feature),
        )
        if rule is not None
    ),
    *_not_null(EVENT_TIMESTAMP, PICKED),
    Rule(Check.NOT_NULL, (RATING,), nan_is_null=True),
    Rule(Check.NOT_NULL, (LABEL,), nan_is_null=True),
    Rule(Check.BETWEEN, (RATING,), low=MIN_RATING, high=MAX_RATING, only=RATED),
    Rule(Check.IN_SET, (LABEL,), values=(0, 1)),
    Rule(Check.IN_SET, (PICKED,), values=(0, 1)),
    Rule(Check.IN_SET, (RATING,), values=(0,), only=SAMPLED),
    Rule(Check.IN_SET, (LABEL,), values=(0,), only=SAMPLED),
)
SNAPSHOT_UNIQUE = Rule(Check.UNIQUE, EVENT_KEY, only=RATED)  # a table-level rule: on the whole snapshot only
