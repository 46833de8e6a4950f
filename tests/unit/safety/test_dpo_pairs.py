"""The safety DPO recipe (issue 26 item 5): the probe set's train / held-out split, the pair builder (refusal >
compliance on attacks, answer > refusal on safe prompts, never a held-out probe), and `lmforge redteam --split train
--dpo-pairs` feeding `lmforge dpo` on a tiny model."""

import json

from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.common.errors import LmforgeError
from lmforge.safety.dpo_pairs import build_pairs, whole_sentences
from lmforge.safety.probe_split import HELDOUT_INTENTS, helpful_probes, intent_index, split_probes
from lmforge.safety.probes import INTENTS, attack_probes, benign_probes, is_refusal
from tests.cli_util import assert_user_error, run_cli
from tests.context_lm import context_model
from tests.server_util import live_server
from tests.tiny_lm import tiny_tokenizer


def test_train_and_heldout_split_the_probe_set_by_whole_intents():
    train, heldout = split_probes("train"), split_probes("heldout")
    for kind in (0, 1):  # attacks, benign
        ids_train, ids_held = {p.id for p in train[kind]}, {p.id for p in heldout[kind]}
        assert ids_train and ids_held and not ids_train & ids_held
        assert ids_train | ids_held == {p.id for p in (attack_probes(), benign_probes())[kind]}
    assert {intent_index(p) for p in heldout[0]} == set(HELDOUT_INTENTS)
    assert not {intent_index(p) for p in train[0]} & set(HELDOUT_INTENTS)
    held_words = [INTENTS[i].text for i in HELDOUT_INTENTS]  # no train or helpful prompt mentions a held-out intent
    assert not any(w in p.prompt for w in held_words for p in train[0] + train[1] + helpful_probes())
    assert len(heldout[0]) == 8 * len(HELDOUT_INTENTS) and len(heldout[1]) == 10


def rows_for(probes, answer, refused, finish="stop"):
    return [{"id": p.id, "category": p.category, "technique": p.technique, "prompt": p.prompt, "answer": answer,
             "finish_reason": finish, "refused": refused} for p in probes]


def test_pair_builder_makes_both_kinds_from_the_train_split_only():
    attacks, benign = split_probes("all")
    complied = attacks[:len(attacks) // 2]
    rows = (rows_for(complied, "Sure! Step 1: get a pipe and powder.", False)
            + rows_for(attacks[len(attacks) // 2:], "I'm sorry, I can't.", True)
            + rows_for(benign[:4], "Use kill -9 with the process id. Then check it is gone. And", False, "length")
            + rows_for(benign[4:], "I'm sorry, I can't.", True)  # over-refused: no helpful answer, no pair
            + rows_for(helpful_probes(), "Mix flour, water and yeast.", False))
    pairs = build_pairs(rows)
    train_ids = {p.id for p in split_probes("train")[0] + split_probes("train")[1]} | {p.id for p in helpful_probes()}
    assert {p["id"] for p in pairs} <= train_ids  # held-out rows were passed in, none became a pair
    refuse = [p for p in pairs if p["kind"] == "refuse"]
    help_ = [p for p in pairs if p["kind"] == "help"]
    assert len(refuse) == len(split_probes("train")[0]) and len(help_) == 2 + len(helpful_probes())
    assert all(is_refusal(p["chosen"], "stop") and not is_refusal(p["rejected"], "stop") for p in refuse)
    assert all(is_refusal(p["rejected"], "stop") and not is_refusal(p["chosen"], "stop") for p in help_)
    own = {p.id for p in complied}
    assert all(p["rejected"] == "Sure! Step 1: get a pipe and powder." for p in refuse if p["id"] in own)
    assert all(p["rejected"].startswith("Sure, here you go.") for p in refuse if p["id"] not in own)
    assert all("抱歉" in p["chosen"] or "对不起" in p["chosen"] for p in refuse if p["id"].endswith("-chinese"))
    benign_help = [p for p in help_ if p["id"].startswith("benign")]
    assert all(p["chosen"] == "Use kill -9 with the process id. Then check it is gone." for p in benign_help)
    assert whole_sentences("One. Two", "stop") == "One. Two"
    assert whole_sentences("x" * 40 + ". Two", "length") == "x" * 40 + "."


def test_redteam_dpo_pairs_feed_lmforge_dpo_on_a_tiny_model(tmp_path):
    from lmforge.formats.loader import LM

    # init std 0.3: the tiny model writes varied text (at 0.02 it answers blank lines, all "refusals")
    lm = LM(model=context_model(vocab_size=320, eos_token_id=2), tokenizer=tiny_tokenizer(), source="tiny",
            generation_config={"eos_token_id": 2})
    lm.save(tmp_path / "tiny")
    pairs = tmp_path / "pairs.jsonl"
    with live_server(lm, name="tiny") as (url, _):
        result = CliRunner().invoke(app, ["redteam", url + "/v1", "--split", "train", "--limit", "4",
                                          "--max-tokens", "6", "--dpo-pairs", str(pairs)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert {r["kind"] for r in records} == {"refuse", "help"} and "DPO pairs:" in result.output
    assert all(r["id"] not in {p.id for p in split_probes("heldout")[0]} for r in records)
    out = tmp_path / "dpo"  # in-process: the pairs file is read, encoded with the model's template and trained on
    done = CliRunner().invoke(app, ["dpo", "--model", str(tmp_path / "tiny"), "--data", str(pairs), "--out", str(out),
                                    "--max-steps", "1", "--batch-size", "4", "--threads", "1", "--no-export-hf"])
    assert done.exit_code == 0, done.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_pairs"] + summary["heldout_pairs"] == len(records) and summary["steps"] == 1


def test_redteam_split_mistakes_are_one_line_errors(tmp_path):
    bad_split = CliRunner().invoke(app, ["redteam", "http://127.0.0.1:9/v1", "--split", "test"])
    assert isinstance(bad_split.exception, LmforgeError) and "all, train, heldout" in str(bad_split.exception)
    assert_user_error(run_cli("redteam", "http://127.0.0.1:9/v1", "--dpo-pairs", str(tmp_path / "p.jsonl")),
                      "--split train")
    assert not (tmp_path / "p.jsonl").exists()
