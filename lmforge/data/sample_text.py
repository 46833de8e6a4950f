"""Word banks and a tiny sentence grammar for the synthetic sample corpus (English, French, German, Spanish,
Chinese). Random slot fillers make unrelated documents share almost no word 5-grams, so planted duplicates
are the only near-duplicates — the property the dedup tests rely on.
"""

from __future__ import annotations

import random


def _split(words: str, sep: str | None = None) -> list[str]:
    return words.split(sep)


EN = {
    "adj": _split("old quiet busy narrow ancient modern small northern coastal rural famous local wooden bright "
           "careful patient curious generous tired proud honest clever gentle stubborn cheerful serious "
           "distant crowded empty golden silver frozen humid dusty rocky sandy green"),
    "noun": _split("village river teacher farmer library bridge harbour market council museum orchard bakery "
            "engineer student doctor painter sailor merchant garden school station factory forest valley "
            "mountain island railway festival newspaper workshop hospital kitchen vineyard lighthouse "
            "monastery castle theatre orchestra"),
    "verb": _split("repaired visited described painted explored protected rebuilt studied announced celebrated "
            "designed measured organised photographed recorded translated welcomed inspected restored "
            "supported"),
    "prep": _split("near behind beside across beyond under above along around through"),
    "time": _split("last spring|every autumn|in the early morning|after the long winter|during the festival|"
            "before the harvest|on rainy afternoons|in the nineteenth century|for many years|"
            "at the end of the season", "|"),
    "conn": _split("Meanwhile,|However,|In addition,|As a result,|For this reason,|Later,|Even so,|At first,", "|"),
}
FR = {
    "adj": _split("vieux calme petit ancien moderne célèbre grand joli tranquille fier patient curieux"),
    "noun": _split("village fleuve professeur fermier bibliothèque pont port marché conseil musée verger "
            "boulanger ingénieur étudiant médecin peintre marin jardin"),
    "verb": _split("a réparé|a visité|a décrit|a peint|a exploré|a protégé|a reconstruit|a étudié|a annoncé|"
            "a célébré|a dessiné|a mesuré", "|"),
    "prep": _split("près du|derrière le|à côté du|au-delà du|sous le|le long du", "|"),
    "time": _split("au printemps dernier|chaque automne|tôt le matin|après le long hiver|pendant la fête|"
            "avant la récolte", "|"),
    "conn": _split("Cependant,|Ensuite,|De plus,|Par conséquent,|Plus tard,|Au début,", "|"),
}
DE = {
    "adj": _split("alte ruhige kleine moderne berühmte große stolze geduldige neugierige fleißige"),
    "noun": _split("Lehrer Bauer Bäcker Ingenieur Student Arzt Maler Seemann Händler Gärtner Förster "
            "Bürgermeister Fischer Schreiner"),
    "verb": _split("reparierte|besuchte|beschrieb|malte|erkundete|schützte|baute|studierte|feierte|zeichnete|"
            "vermaß|restaurierte", "|"),
    "obj": _split("die Brücke|den Hafen|den Markt|das Museum|den Garten|die Schule|den Bahnhof|die Fabrik|"
           "den Wald|das Tal|die Kirche|das Rathaus", "|"),
    "time": _split("im letzten Frühling|jeden Herbst|am frühen Morgen|nach dem langen Winter|während des Festes|"
            "vor der Ernte", "|"),
    "conn": _split("Allerdings|Danach|Außerdem|Deshalb|Später|Zunächst", "|"),
}
ES = {
    "adj": _split("viejo tranquilo pequeño antiguo moderno famoso grande orgulloso paciente curioso"),
    "noun": _split("maestro granjero panadero ingeniero estudiante médico pintor marinero comerciante "
            "jardinero pescador alcalde carpintero"),
    "verb": _split("reparó|visitó|describió|pintó|exploró|protegió|reconstruyó|estudió|celebró|diseñó|midió|"
            "restauró", "|"),
    "obj": _split("el puente|el puerto|el mercado|el museo|el jardín|la escuela|la estación|la fábrica|el bosque|"
           "el valle|la iglesia|el ayuntamiento", "|"),
    "time": _split("la primavera pasada|cada otoño|temprano por la mañana|después del largo invierno|"
            "durante la fiesta|antes de la cosecha", "|"),
    "conn": _split("Sin embargo,|Después,|Además,|Por eso,|Más tarde,|Al principio,", "|"),
}
ZH = {
    "subj": _split("村里的老师 年轻的农民 河边的渔民 城里的医生 学校的学生 市场的商人 博物馆的馆长 工厂的工程师 "
            "山上的牧民 图书馆的管理员 小镇的面包师 港口的水手"),
    "verb": _split("修理了 参观了 描述了 保护了 重建了 研究了 庆祝了 设计了 测量了 记录了 翻译了 欢迎了"),
    "obj": _split("那座古老的石桥 新建的火车站 热闹的菜市场 安静的图书馆 河边的果园 山脚下的学校 海边的灯塔 "
           "城东的医院 村口的面包店 美丽的花园 老旧的工厂 宽阔的广场"),
    "time": _split("去年春天 每年秋天 清晨的时候 漫长的冬天过后 节日期间 收获之前 很多年来 这个季节结束时"),
    "conn": _split("然而 后来 此外 因此 起初 与此同时"),
}


EN_TAIL = ("came too", "were there", "joined them", "followed", "helped", "watched")
FR_TAIL = ("", "", " avec les voisins", " pour la ville", ", dit-on", " sans aide")
DE_TAIL = ("", "", " mit den Nachbarn", " für die Stadt", ", sagt man", " ohne Hilfe")
ES_TAIL = ("", "", " con los vecinos", " para la ciudad", ", dicen", " sin ayuda")
ZH_TAIL = ("", "", "，大家都很高兴", "，花了很多时间", "，这是第一次", "，没有人帮忙")


def _en_sentence(rng: random.Random) -> str:
    b = EN
    s = (f"The {rng.choice(b['adj'])} {rng.choice(b['noun'])} {rng.choice(b['verb'])} the "
         f"{rng.choice(b['adj'])} {rng.choice(b['noun'])} {rng.choice(b['prep'])} the "
         f"{rng.choice(b['noun'])} {rng.choice(b['time'])}")
    if rng.random() < 0.4:
        s = f"{rng.choice(b['conn'])} {s[0].lower()}{s[1:]}"
    if rng.random() < 0.3:
        s += f", and {rng.choice(b['adj'])} {rng.choice(b['noun'])}s {rng.choice(EN_TAIL)}"
    return s + "."


def _fr_sentence(rng: random.Random) -> str:
    b = FR
    return (f"{rng.choice(b['conn'])} le {rng.choice(b['noun'])} {rng.choice(b['adj'])} {rng.choice(b['verb'])} "
            f"le {rng.choice(b['noun'])} {rng.choice(b['prep'])} {rng.choice(b['noun'])} "
            f"{rng.choice(b['time'])}{rng.choice(FR_TAIL)}.")


def _de_sentence(rng: random.Random) -> str:
    b = DE
    return (f"{rng.choice(b['conn'])} {rng.choice(b['verb'])} der {rng.choice(b['adj'])} "
            f"{rng.choice(b['noun'])} {rng.choice(b['time'])} {rng.choice(b['obj'])}{rng.choice(DE_TAIL)}.")


def _es_sentence(rng: random.Random) -> str:
    b = ES
    return (f"{rng.choice(b['conn'])} el {rng.choice(b['noun'])} {rng.choice(b['adj'])} {rng.choice(b['verb'])} "
            f"{rng.choice(b['obj'])} {rng.choice(b['time'])}{rng.choice(ES_TAIL)}.")


def _zh_sentence(rng: random.Random) -> str:
    b = ZH
    return (f"{rng.choice(b['conn'])}，{rng.choice(b['time'])}，{rng.choice(b['subj'])}{rng.choice(b['verb'])}"
            f"{rng.choice(b['obj'])}{rng.choice(ZH_TAIL)}。")


SENTENCE = {"en": _en_sentence, "fr": _fr_sentence, "de": _de_sentence, "es": _es_sentence, "zh": _zh_sentence}
LANGUAGES = tuple(SENTENCE)


def prose(lang: str, rng: random.Random, paragraphs: int, sentences: int) -> str:
    """Paragraphs (blank-line separated) of `sentences` random sentences each, in `lang`."""
    sep = "" if lang == "zh" else " "
    return "\n\n".join(
        sep.join(SENTENCE[lang](rng) for _ in range(sentences)) for _ in range(paragraphs)
    )
