"""The `lmforge` command: registers the sub-commands and turns user errors into one line and exit code 2.

Nothing here imports torch: argument checks answer at once, and the OpenMP wait policy is set before torch loads.
Help is plain click text (rich markup would swallow "[default: ...]" in help strings and label flags `<bool>`), as
wide as the terminal up to 120 columns, and 120 columns when not on a terminal (pipes, CI).
"""

import sys

import typer

from lmforge.cli import (  # one per line, so parallel branches add commands without conflicts
    bench_cmd,
    calc_cmd,
    chat_cmd,
    classify_cmd,
    clip_cmd,
    convert_cmd,
    data_cmd,
    data_select_cmd,
    data_synth_cmd,
    decontam_cmd,
    distill_cmd,
    dpo_cmd,
    embed_cmd,
    eval_cmd,
    generate_cmd,
    grpo_cmd,
    info_cmd,
    judge_cmd,
    lora_cmd,
    ppo_cmd,
    pretrain_cmd,
    prm_cmd,
    prune_cmd,
    quantize_cmd,
    rag_cmd,
    redteam_cmd,
    rlaif_cmd,
    rm_cmd,
    rs_cmd,
    safety_cmd,
    scaling_cmd,
    serve_cmd,
    sft_cmd,
    speedrun_cmd,
    tokenizer_cmd,
    vlm_cmd,
)
from lmforge.common.errors import LmforgeError

HELP_WIDTH = 120


def help_context() -> dict:
    """click's help width: the terminal's up to HELP_WIDTH; HELP_WIDTH when not on a terminal (click would take 80,
    or a COLUMNS variable that describes some terminal, not the pipe or file the help goes to)."""
    settings = {"max_content_width": HELP_WIDTH}
    if not sys.stdout.isatty():
        settings["terminal_width"] = HELP_WIDTH
    return settings


app = typer.Typer(
    name="lmforge",
    help="lmforge: clean data, train tokenizers, build, train, align, run and serve language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings=help_context(),
)
app.command("info")(info_cmd.info)
app.command("convert")(convert_cmd.convert)
app.command("generate")(generate_cmd.generate)
app.command("chat")(chat_cmd.chat)
app.command("serve", epilog=serve_cmd.EPILOG)(serve_cmd.serve)
app.command("quantize")(quantize_cmd.quantize)
app.command("prune")(prune_cmd.prune)
app.add_typer(bench_cmd.app, name="bench")
app.command("calc")(calc_cmd.calc)
app.add_typer(tokenizer_cmd.app, name="tokenizer")
app.add_typer(data_cmd.app, name="data")
data_cmd.app.command("select")(data_select_cmd.select)
data_cmd.app.command("synth")(data_synth_cmd.synth)
app.command("pretrain", epilog=pretrain_cmd.EPILOG)(pretrain_cmd.pretrain_command)
app.command("report")(pretrain_cmd.report_command)
app.command("scaling")(scaling_cmd.scaling_command)
app.command("distill", epilog=distill_cmd.EPILOG)(distill_cmd.distill_command)
app.add_typer(eval_cmd.app, name="eval")
app.command("decontam")(decontam_cmd.decontam)
app.command("judge")(judge_cmd.judge)
app.add_typer(lora_cmd.app, name="lora")
app.command("rm", epilog=rm_cmd.EPILOG)(rm_cmd.rm_command)
app.command("dpo", epilog=dpo_cmd.EPILOG)(dpo_cmd.dpo_command)
app.command("ppo", epilog=ppo_cmd.EPILOG)(ppo_cmd.ppo_command)
app.command("grpo", epilog=grpo_cmd.EPILOG)(grpo_cmd.grpo_command)
app.command("rs", epilog=rs_cmd.EPILOG)(rs_cmd.rs_command)
app.command("sft", epilog=sft_cmd.EPILOG)(sft_cmd.sft_command)
app.command("speedrun", epilog=speedrun_cmd.EPILOG)(speedrun_cmd.speedrun_command)
app.add_typer(safety_cmd.app, name="safety")
app.command("redteam")(redteam_cmd.redteam)
app.add_typer(classify_cmd.app, name="classify")
app.command("clip")(clip_cmd.clip_command)
app.command("vlm")(vlm_cmd.vlm_command)
app.command("embed")(embed_cmd.embed)
app.add_typer(rag_cmd.app, name="rag")
app.add_typer(prm_cmd.app, name="prm")
app.command("rlaif")(rlaif_cmd.rlaif)


def main() -> None:
    try:
        app()
    except LmforgeError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
