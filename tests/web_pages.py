"""Web pages for the prepare tests: real HTML (navigation, article, footer) in WARC files written with
warcio; good English stories, planted exact and near duplicates, other languages and low-quality pages,
each page tagged with the step that must remove it ("kept" for the good ones)."""

from __future__ import annotations

import io
import random
from pathlib import Path

ADJ = ["old", "young", "quiet", "busy", "small", "large", "green", "bright", "dark", "tired", "happy", "careful",
       "famous", "local", "strange", "gentle", "rusty", "narrow", "wooden", "northern", "early", "patient", "heavy", "kind"]
NOUN = ["farmer", "teacher", "captain", "neighbour", "doctor", "baker", "mayor", "guide", "painter", "student",
        "fisherman", "brother", "engineer", "traveller", "bridge", "house", "market", "school", "boat", "library",
        "garden", "station", "church", "field", "bakery", "lighthouse", "letter", "mill", "river", "forest", "tower"]
VERB = ["visited", "painted", "described", "remembered", "carried", "found", "repaired", "built", "watched", "sold",
        "cleaned", "opened", "followed", "photographed", "measured", "admired", "ignored", "borrowed", "moved", "studied"]
PREP = ["near", "behind", "beside", "across", "under", "above", "beyond", "inside", "around", "along"]
TAIL = ["before sunset", "in the rain", "after the winter", "at dawn", "on a Sunday", "with great care", "for an hour",
        "without a word", "during the festival", "by the evening"]
DE = ["Der Bauer geht am Morgen auf das Feld und arbeitet bis zum Abend.",
      "Die Kinder spielen im Garten, während die Mutter das Essen kocht.",
      "Im Winter ist es in diesem Dorf sehr kalt, aber die Menschen sind freundlich.",
      "Wir haben gestern einen langen Spaziergang durch den Wald gemacht.",
      "Der Zug nach Berlin fährt jeden Tag um acht Uhr vom alten Bahnhof ab.",
      "Meine Großmutter erzählt oft Geschichten aus ihrer Jugend auf dem Land."]
FR = ["Le boulanger ouvre sa boutique très tôt le matin pour vendre du pain frais.",
      "Les enfants jouent dans le jardin pendant que leur mère prépare le repas.",
      "En hiver, il fait très froid dans ce village, mais les habitants sont accueillants.",
      "Nous avons fait une longue promenade dans la forêt hier après-midi.",
      "Le train pour Paris part tous les jours à huit heures de la vieille gare.",
      "Ma grand-mère raconte souvent des histoires de sa jeunesse à la campagne."]
EMAIL = "anna.berg@mail.example.com"


def sentences(rng: random.Random, n: int) -> list[str]:
    def phrase() -> str:
        return f"{rng.choice(['the', 'a', 'one', 'that', 'this', 'our'])} {rng.choice(ADJ)} {rng.choice(NOUN)}"
    return [f"{phrase().capitalize()} {rng.choice(VERB)} {phrase()} {rng.choice(PREP)} {phrase()} {rng.choice(TAIL)}."
            for _ in range(n)]


def paragraphs(rng: random.Random, n: int = 4, per: int = 5) -> list[str]:
    return [" ".join(sentences(rng, per)) for _ in range(n)]


def html(title: str, paras: list[str]) -> str:
    body = "".join(f"<p>{p}</p>" for p in paras)
    return (f"<!DOCTYPE html><html><head><title>{title}</title></head><body><nav><a href='/'>Home</a> "
            f"<a href='/news'>News</a></nav><main><article><h1>{title}</h1>{body}</article></main>"
            "<footer>Contact us</footer></body></html>")


def pages(seed: int = 0, n_good: int = 8) -> list[tuple[str, str, str]]:
    """(url, html, the step that removes it or 'kept')."""
    rng = random.Random(seed)
    good = [(f"http://good.example.org/story/{i}", html(f"Story {i}", paragraphs(rng)), "kept") for i in range(n_good)]
    good[2] = (good[2][0], good[2][1].replace("</article>", f"<p>Write to {EMAIL} for the whole story.</p></article>"),
               "kept")
    near = good[1][1].replace(" the ", " the big ", 2)
    menu = [f"{rng.choice(ADJ)} {rng.choice(NOUN)} and {rng.choice(NOUN)}" for _ in range(40)]
    prices = [" ".join(f"{w} {rng.randint(1000, 99999)}" for w in p.split()) for p in paragraphs(rng, 2)]
    return [*good,
            ("http://copy.example.org/story/0", good[0][1], "exact_dedup"),
            ("http://mirror.example.org/story/1", near, "near_dedup"),
            ("http://de.example.org/dorf", html("Das Dorf", [" ".join(rng.sample(DE, 6)) for _ in range(2)]), "language"),
            ("http://fr.example.org/village", html("Le village", [" ".join(rng.sample(FR, 6)) for _ in range(2)]),
             "language"),
            ("http://spam.example.net/offer", html("Offer", paragraphs(rng)), "url_filter"),
            ("http://good.example.org/repeat", html("Repeat", ["Buy the best shoes at the lowest price today."] * 25),
             "gopher_repetition"),
            ("http://good.example.org/prices", html("Prices", prices), "gopher_quality"),
            ("http://good.example.org/lorem", html("Lorem", paragraphs(rng, 3) + ["Lorem ipsum dolor sit amet, "
                                                                                 "consectetur adipiscing elit."]),
             "c4_quality"),
            ("http://good.example.org/menu", html("Menu", paragraphs(rng, 2) + menu), "fineweb_quality")]


def write_warc(path: Path, records: list[tuple[str, str, str]], image: bool = False) -> Path:
    """A gzipped WARC of HTTP responses, one per page (and one PNG image response with `image`)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)

        def response(url: str, payload: bytes, content_type: str) -> None:
            headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(payload),
                                                          http_headers=headers))

        for url, page, _ in records:
            response(url, page.encode(), "text/html; charset=utf-8")
        if image:
            response("http://good.example.org/logo.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png")
    return path
