"""Language ID with the bundled fastText model: accuracy on hand-written samples of at least 20 words."""

import pytest

from lmforge.common.errors import ConfigError
from lmforge.data.document import Document, Drop
from lmforge.data.langid import LangIdConfig, LanguageIdentifier

SAMPLES = {
    "en": [
        "The committee met on Tuesday to discuss the new budget, and most members agreed that the library "
        "should stay open on weekends during the exam period.",
        "After the storm passed, the fishermen repaired their nets on the harbour wall while their children "
        "collected shells along the wet sand.",
        "Learning to cook at home saves money, but it also teaches patience, because good bread cannot be "
        "rushed no matter how hungry you are.",
        "The museum's new exhibition traces the history of printing from wooden blocks to the first steam "
        "presses that changed newspapers forever.",
        "Please remember that the train to the airport leaves every twenty minutes from platform four, even "
        "on public holidays and Sundays.",
    ],
    "fr": [
        "Le comité s'est réuni mardi pour discuter du nouveau budget, et la plupart des membres ont convenu "
        "que la bibliothèque devait rester ouverte le week-end.",
        "Après la tempête, les pêcheurs ont réparé leurs filets sur le quai pendant que leurs enfants "
        "ramassaient des coquillages sur le sable mouillé.",
        "Apprendre à cuisiner chez soi permet d'économiser de l'argent, mais cela enseigne aussi la patience, "
        "car le bon pain ne se presse pas.",
        "La nouvelle exposition du musée retrace l'histoire de l'imprimerie, des blocs de bois jusqu'aux "
        "premières presses à vapeur qui ont transformé les journaux.",
        "N'oubliez pas que le train pour l'aéroport part toutes les vingt minutes du quai numéro quatre, même "
        "les jours fériés et le dimanche.",
    ],
    "de": [
        "Der Ausschuss traf sich am Dienstag, um den neuen Haushalt zu besprechen, und die meisten Mitglieder "
        "waren sich einig, dass die Bibliothek am Wochenende geöffnet bleiben sollte.",
        "Nachdem der Sturm vorüber war, flickten die Fischer ihre Netze an der Hafenmauer, während ihre "
        "Kinder Muscheln im nassen Sand sammelten.",
        "Zu Hause kochen zu lernen spart Geld, aber es lehrt auch Geduld, denn gutes Brot lässt sich nicht "
        "beschleunigen, egal wie hungrig man ist.",
        "Die neue Ausstellung des Museums zeichnet die Geschichte des Buchdrucks nach, von Holzblöcken bis zu "
        "den ersten Dampfpressen, die Zeitungen für immer veränderten.",
        "Bitte denken Sie daran, dass der Zug zum Flughafen alle zwanzig Minuten von Gleis vier abfährt, auch "
        "an Feiertagen und Sonntagen.",
    ],
    "es": [
        "El comité se reunió el martes para discutir el nuevo presupuesto, y la mayoría de los miembros "
        "estuvo de acuerdo en que la biblioteca debía abrir los fines de semana.",
        "Después de la tormenta, los pescadores arreglaron sus redes en el muelle mientras sus hijos "
        "recogían conchas en la arena mojada de la playa.",
        "Aprender a cocinar en casa ahorra dinero, pero también enseña paciencia, porque el buen pan no se "
        "puede apresurar por mucha hambre que uno tenga.",
        "La nueva exposición del museo recorre la historia de la imprenta, desde los bloques de madera hasta "
        "las primeras prensas de vapor que cambiaron los periódicos.",
        "Recuerde que el tren al aeropuerto sale cada veinte minutos desde el andén cuatro, incluso los días "
        "festivos y los domingos por la mañana.",
    ],
    "zh": [
        "委员会星期二开会讨论新的预算，大多数成员都同意在考试期间图书馆周末也应该继续开放，方便学生复习功课。",
        "暴风雨过后，渔民们在港口的石墙上修补渔网，他们的孩子们则在潮湿的沙滩上捡贝壳，一直玩到太阳下山。",
        "在家学做饭可以省钱，但它也教会人耐心，因为无论你有多饿，好的面包都需要时间慢慢发酵和烘烤才能做好。",
        "博物馆的新展览追溯了印刷术的历史，从最早的木板雕刻一直到彻底改变报纸行业的第一批蒸汽印刷机。",
        "请记住，去机场的火车每二十分钟从四号站台发车一次，即使在公共假日和星期天也按时运行，非常方便。",
    ],
}


@pytest.fixture(scope="module")
def identifier():
    return LanguageIdentifier(LangIdConfig(allowed=()))


def test_samples_are_long_enough():
    for lang, texts in SAMPLES.items():
        for text in texts:
            assert (len(text) >= 40) if lang == "zh" else (len(text.split()) >= 20), text


def test_accuracy_at_least_95_percent(identifier):
    total = correct = 0
    for lang, texts in SAMPLES.items():
        for text in texts:
            predicted, prob = identifier.predict(text)
            total += 1
            correct += predicted == lang
            assert 0.0 <= prob <= 1.0
    assert correct / total >= 0.95


def test_step_filters_by_language_and_confidence():
    en_only = LanguageIdentifier(LangIdConfig(allowed=("en",), min_confidence=0.5))
    kept = en_only.apply(Document("1", SAMPLES["en"][0]))
    assert isinstance(kept, Document) and kept.meta["language"] == "en" and kept.meta["language_score"] > 0.5
    assert en_only.apply(Document("2", SAMPLES["fr"][0])) == Drop("langid:language_not_allowed")
    strict = LanguageIdentifier(LangIdConfig(allowed=(), min_confidence=1.0))
    assert strict.apply(Document("3", "ok")) == Drop("langid:low_confidence")
    with pytest.raises(ConfigError, match="min_confidence=1.5"):
        LangIdConfig(min_confidence=1.5)
