"""The rank-0 logger: records reach standard output once, on the main process, warnings marked."""

from posttrain.log import ALL_RANKS, get_logger


def test_info_reaches_stdout_on_rank_zero(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    get_logger("posttrain.test").info("hello %s", "there")
    assert capsys.readouterr().out == "hello there\n"


def test_other_ranks_are_silent_unless_asked(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    log = get_logger("posttrain.test")
    log.info("dropped")
    log.warning("kept", extra=ALL_RANKS)
    assert capsys.readouterr().out == "posttrain: warning: kept\n"


def test_warning_prefix_and_module_names(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    log = get_logger("some.module")
    assert log.name == "posttrain.some.module"
    log.warning("posttrain sft: already prefixed")
    log.warning("plain")
    assert capsys.readouterr().out == "posttrain sft: already prefixed\nposttrain: warning: plain\n"
