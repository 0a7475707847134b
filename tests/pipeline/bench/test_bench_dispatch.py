"""`xalign bench`: `--help` lists the benchmarks (exit 0); no or an unknown benchmark is bad input (exit 2)."""

import pytest

from pipeline import cli


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_bench_help_lists_the_benchmarks(flag, capsys):
    assert cli.main(["bench", flag]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}  " in out for name in ("train", "eval")) and "  encode  " in out
    assert "`xalign bench <benchmark> --help`" in out


@pytest.mark.parametrize(("argv", "said"), [([], "no benchmark given"), (["fast"], "'fast' is not a benchmark")])
def test_bench_without_a_known_benchmark_exits_2_with_the_choices(argv, said, capsys):
    assert cli.main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert said in err and "choose one of train, eval, encode" in err
