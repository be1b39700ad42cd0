"""The CLI's shared flags, help defaults and exit codes (no model is loaded here)."""

import argparse
import inspect

import pytest

from personascope.cli import build_parser, main
from personascope.cli.exits import ExitCode, exit_code_for
from personascope.cli.options import MODEL_DEFAULTS, json_option, judge_overrides, judge_spec
from personascope.errors import DataError, ModelNotFoundError, PersonascopeError, UsageError

SHARED = ["--model", "X", "--backend", "transformer_lens", "--device", "cpu", "--dtype", "float32",
          "--batch-size", "4", "--quiet"]
# Each command that loads a model, with its other required arguments.
MODEL_COMMANDS = {
    "capture": ["capture", "--prompts", "p.jsonl", "--out", "o"],
    "localize": ["localize", "--out", "o"],
    "vector extract": ["vector", "extract", "--trait", "evil", "--out", "o"],
    "vector steer": ["vector", "steer", "--vector", "v.safetensors", "--layer", "1", "--prompt", "hi"],
    "vector monitor": ["vector", "monitor", "--vector", "v", "--layer", "1", "--prompts", "p", "--out", "o"],
    "vector flag": ["vector", "flag", "--vector", "v", "--layer", "1", "--data", "d", "--out", "o"],
    "flag": ["flag", "--data", "d.jsonl"],
    "axis fit": ["axis", "fit", "--out", "o"],
    "axis monitor": ["axis", "monitor", "--axis", "a", "--conversations", "c.jsonl", "--out", "o"],
    "axis cap": ["axis", "cap", "--axis", "a", "--prompt", "hi"],
    "judge-check": ["judge-check"],
    "serve-judge": ["serve-judge"],
    "audit": ["audit"],
    "validate": ["validate"],
    "demo": ["demo"],
}
# Commands whose unset flags defer to the run config (``from_config``) instead of a fixed default.
CONFIG_COMMANDS = {"audit", "validate"}
# compare loads two models named by --base and --candidate; it takes every other shared flag.
RUNTIME_ONLY = {"compare": ["compare", "--base", "b", "--candidate", "c"]}


def _subparsers(parser, name="personascope"):
    """(command name, parser) for every leaf command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                nested = list(_subparsers(sub, f"{name} {sub_name}"))
                yield from nested or [(f"{name} {sub_name}"[len("personascope "):], sub)]


def _flags(parser):
    return {opt: a for a in parser._actions for opt in a.option_strings}


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_every_model_command_takes_the_shared_flags(command):
    args = build_parser().parse_args([*MODEL_COMMANDS[command], *SHARED])
    assert (args.model, args.backend, args.device, args.dtype, args.batch_size, args.quiet) == (
        "X", "transformer_lens", "cpu", "float32", 4, True)


def test_compare_takes_the_runtime_flags():
    args = build_parser().parse_args([*RUNTIME_ONLY["compare"], *SHARED[2:]])
    assert (args.backend, args.device, args.dtype, args.batch_size, args.quiet) == (
        "transformer_lens", "cpu", "float32", 4, True)


def test_the_lists_above_name_every_command_that_takes_model_flags():
    with_backend = {name for name, p in _subparsers(build_parser()) if "--backend" in _flags(p)}
    assert with_backend == set(MODEL_COMMANDS) | set(RUNTIME_ONLY)


def test_shared_flags_have_one_default_everywhere_but_audit_where_the_config_decides():
    parser = build_parser()
    for command, argv in MODEL_COMMANDS.items():
        args = parser.parse_args(argv)
        got = {k: getattr(args, k) for k in MODEL_DEFAULTS}
        if command in CONFIG_COMMANDS:
            assert set(got.values()) == {None}, got  # unset: the config's values apply
        else:
            assert got == MODEL_DEFAULTS, command
    for command, p in _subparsers(parser):
        flags = _flags(p)
        if "--judge" in flags and command not in CONFIG_COMMANDS:
            assert flags["--judge"].default == "contrast", command


def test_model_defaults_are_the_librarys():
    from personascope.models import load_model
    from personascope.runner import RunConfig

    sig = inspect.signature(load_model).parameters
    assert MODEL_DEFAULTS["model"] == sig["spec"].default
    for key in ("backend", "device", "dtype", "batch_size"):
        assert MODEL_DEFAULTS[key] == sig[key].default == RunConfig.model_fields[key].default, key
    assert MODEL_DEFAULTS["model"] == RunConfig.model_fields["model"].default


def test_audit_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["audit", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # help text wraps lines
    assert "(default: the config's, else smollm2-135m-instruct)" in out
    assert "(default: the config's, else auto)" in out
    assert "(default: the config's, else contrast)" in out
    assert "(default: the config's, else personascope_out)" in out


def test_command_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["capture", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: smollm2-135m-instruct)" in out and "(default: auto)" in out and "(default: resid_post)" in out
    assert "(default: None)" not in out and "(default: False)" not in out


def test_every_option_with_a_default_shows_it(capsys):
    """An option without help text would hide its default in --help."""
    for command, p in _subparsers(build_parser()):
        for action in p._actions:
            if action.default not in (None, False, [], argparse.SUPPRESS):
                assert action.help, f"{command} {action.option_strings or action.dest}"


def test_batch_size_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["capture", "--prompts", "p", "--out", "o", "--batch-size", "0"])
    assert exc.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "not at least 1" in err and "'auto'" in err
    assert build_parser().parse_args(["capture", "--prompts", "p", "--out", "o", "--batch-size", "auto"]
                                     ).batch_size == "auto"


def test_auto_batch_size_follows_free_memory_and_stays_fixed_on_cpu(tiny_nn):
    """The memory model: twice the free memory, twice the batch; a wider dtype or longer
    sequences, fewer; never below 1 or above the cap. On CPU, "auto" is the fixed CPU size."""
    from personascope.models import CPU_BATCH_SIZE, auto_batch_size, batch_size_for_memory

    cfg = tiny_nn.hf_model.config
    one = batch_size_for_memory(1e11, cfg, cap=10**6)
    assert one > 100
    assert batch_size_for_memory(2e11, cfg, cap=10**6) in (2 * one, 2 * one + 1)
    assert batch_size_for_memory(1e11, cfg, bytes_per_value=4, cap=10**6) < one
    assert batch_size_for_memory(1e11, cfg, seq_len=2048, cap=10**6) < one
    assert batch_size_for_memory(1.0, cfg) == 1 and batch_size_for_memory(1e15, cfg) == 256
    assert auto_batch_size(tiny_nn.hf_model) == CPU_BATCH_SIZE


def test_an_unknown_device_map_is_named_before_any_load(tmp_path):
    from personascope.errors import UsageError
    from personascope.models import load_model

    with pytest.raises(UsageError, match="device_map 'everywhere'.*balanced"):
        load_model(str(tmp_path / "no-such-model"), device_map="everywhere")


def test_judge_flags_make_a_judge_spec_or_config_overrides():
    parser = build_parser()
    args = parser.parse_args([*MODEL_COMMANDS["vector extract"], "--judge", "http", "--judge-url", "http://h/v1",
                              "--judge-model", "m", "--batch-size", "8"])
    spec = judge_spec(args)
    assert (spec.kind, spec.base_url, spec.model, spec.batch_size, spec.api_key_env) == (
        "http", "http://h/v1", "m", 8, "OPENAI_API_KEY")
    assert judge_spec(parser.parse_args(MODEL_COMMANDS["vector extract"])).kind == "contrast"
    assert judge_overrides(parser.parse_args(["audit"])) == {}
    assert judge_overrides(parser.parse_args(["audit", "--judge", "none"])) == {"kind": "none"}


def test_every_command_but_the_server_takes_the_one_json_flag():
    help_text = json_option()._actions[0].help
    leaves = dict(_subparsers(build_parser()))
    assert len(leaves) >= 18
    without = sorted(name for name, p in leaves.items() if "--json" not in _flags(p))
    assert without == ["serve-judge"]
    # the same flag everywhere: a boolean switch with the one help text (no command-specific meanings)
    for name, p in leaves.items():
        if name != "serve-judge":
            action = _flags(p)["--json"]
            assert (action.dest, action.nargs, action.help) == ("json", 0, help_text), name


def test_judge_check_keeps_the_readme_flag_names():
    args = build_parser().parse_args(["judge-check", "--judges", "http", "--base-url", "http://h/v1",
                                      "--http-model", "m", "--api-key-env", "KEY"])
    assert (args.judge_url, args.judge_model, args.judge_api_key_env) == ("http://h/v1", "m", "KEY")


def test_exit_codes():
    assert [int(c) for c in (ExitCode.OK, ExitCode.FAIL, ExitCode.USAGE, ExitCode.INTERRUPTED)] == [0, 1, 2, 130]
    for exc in (UsageError("x"), DataError("x"), ModelNotFoundError("x"), PersonascopeError("x")):
        assert exit_code_for(exc) == ExitCode.USAGE
    assert exit_code_for(KeyboardInterrupt()) == ExitCode.INTERRUPTED
    assert exit_code_for(BrokenPipeError()) == ExitCode.BROKEN_PIPE
    assert exit_code_for(RuntimeError("a bug")) is None


def test_gate_module_uses_the_same_codes():
    from personascope.reports import gate

    assert (gate.EXIT_PASS, gate.EXIT_FAIL, gate.EXIT_USAGE) == (ExitCode.OK, ExitCode.FAIL, ExitCode.USAGE)


def test_main_maps_exception_types_not_messages(monkeypatch, capsys):
    import personascope.cli.models as models_cmd

    def raise_(exc):
        def handler(args):
            raise exc
        return handler

    # The message mentions another error type on purpose: only the exception's type decides.
    monkeypatch.setattr(models_cmd, "run_models", raise_(DataError("RuntimeError: bad file")))
    assert main(["models"]) == ExitCode.USAGE
    assert capsys.readouterr().err.strip() == "personascope: error: RuntimeError: bad file"
    monkeypatch.setattr(models_cmd, "run_models", raise_(KeyboardInterrupt()))
    assert main(["models"]) == ExitCode.INTERRUPTED
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(models_cmd, "run_models", raise_(RuntimeError("UsageError: a bug")))
    with pytest.raises(RuntimeError):
        main(["models"])


def test_vector_without_action_is_usage_error(capsys):
    assert main(["vector"]) == ExitCode.USAGE
    assert "needs an action" in capsys.readouterr().err
