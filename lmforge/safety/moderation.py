"""Moderation in the OpenAI Moderation API's shape (`flagged`, `categories`, `category_scores`): every category of
a safety policy is scored on each input (rules and PII: 1.0 or 0.0; the classifier: its probability), and OpenAI's
own category names are always present, so clients that read them work with any policy.
"""

from __future__ import annotations

from lmforge.safety.checks import Detector
from lmforge.safety.policy import SafetyPolicy, load_policy

OPENAI_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                     "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
                     "sexual/minors", "violence", "violence/graphic")


class Moderator:
    def __init__(self, policy: SafetyPolicy | None = None):
        self.policy = policy or load_policy()
        self.detector = Detector(self.policy, None)

    def result(self, text: str) -> dict:
        """One entry of `results` for `text`."""
        scores = dict.fromkeys((*OPENAI_CATEGORIES, *self.policy.names), 0.0)
        for cat, score in zip(self.detector.learned, self.detector.scores(text) if text.strip() else [],
                              strict=False):
            scores[cat.name] = max(scores[cat.name], score)
        flagged = set()
        for finding in self.detector.scan(text):
            flagged.add(finding.category)
            scores[finding.category] = max(scores[finding.category], finding.score)
        categories = {name: name in flagged for name in scores}
        return {"flagged": bool(flagged), "categories": categories,
                "category_scores": {name: round(float(v), 6) for name, v in scores.items()},
                "category_applied_input_types": {name: ["text"] if name in flagged else [] for name in scores}}

    def moderate(self, texts: list[str]) -> list[dict]:
        return [self.result(t) for t in texts]
