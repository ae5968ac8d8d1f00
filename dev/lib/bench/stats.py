"""Summaries (median, p90, max) and markdown tables (printed as they are)."""
import statistics


def quantile(values, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return None
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values):
    """{"n", "median", "p90", "p99", "max", "min"} of a list (None-filled if empty)."""
    if not values:
        return {"n": 0, "median": None, "p90": None, "p99": None, "max": None, "min": None}
    return {"n": len(values), "median": statistics.median(values),
            "p90": quantile(values, 0.9), "p99": quantile(values, 0.99),
            "max": max(values), "min": min(values)}


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def num(x, digits=0):
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def times(x):
    return "—" if x is None else f"{x:.2f}×"


def table(headers, rows, align=None):
    """A markdown table; columns after the first right-aligned."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or ["l"] + ["r"] * (len(headers) - 1)

    def line(r):
        out = []
        for i, c in enumerate(r):
            out.append(c.ljust(widths[i]) if align[i] == "l" else c.rjust(widths[i]))
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1))
                         for w, a in zip(widths, align)) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


class Samples:
    """Measurements of one way in one case, and the errors of failed runs."""

    def __init__(self, label):
        self.label = label
        self.values = []
        self.errors = []

    def add(self, value):
        self.values.append(value)

    def fail(self, exc):
        self.errors.append(f"{type(exc).__name__}: {exc}")

    def summary(self):
        return summary(self.values)


class CaseResult:
    """One case's tables, notes, errors, and raw data for the report."""

    def __init__(self, key, title):
        self.key = key
        self.title = title
        self.tables = []
        self.notes = []
        self.errors = []
        self.data = {}

    def table(self, headers, rows):
        self.tables.append(table(headers, rows))

    def collect_errors(self, samples):
        for s in samples:
            self.errors.extend(f"{s.label}: {e}" for e in s.errors)

    def markdown(self, level="###"):
        parts = [f"{level} {self.title}"]
        parts += self.tables
        parts += self.notes
        if self.errors:
            parts.append("Errors:\n\n" + "\n".join(f"- {e}" for e in self.errors))
        return "\n\n".join(parts) + "\n"
