"""nox sessions. CPU machines install with the torch pin in constraints-cpu.txt (never CUDA wheels)."""

import nox

nox.options.sessions = ["lint", "tests", "regression"]
PIN = ("-c", "constraints-cpu.txt")


def _install(session: nox.Session, extra: str = "test") -> None:
    session.install(*PIN, "-e", f".[{extra}]")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The test suite (pytest-benchmark benchmarks run once, as tests)."""
    _install(session)
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session(python="3.11")
def regression(session: nox.Session) -> None:
    """Re-predict the committed memory baseline's grid; fails on growth beyond the tolerance."""
    _install(session)
    session.run("bench", "compare", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """pytest-benchmark benchmarks, saved for comparison (``bench compare --from-pytest-benchmark``)."""
    _install(session)
    # in this process (-n 0): pytest-benchmark times nothing under pytest-xdist
    session.run("pytest", "tests/benchmarks", "-n", "0", "--benchmark-enable", "--benchmark-autosave", *session.posargs)
