"""lmforge's own pipeline steps: HTML to text, language identification without a download, URL
blocklists. (Quality rules, PII masking and deduplication are datatrove's own steps.)"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional
from urllib.parse import urlsplit

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from pydantic import Field

from lmforge.errors import UserError
from lmforge.extras import require

Ratio = Annotated[float, Field(ge=0, le=1)]


class HtmlToText(PipelineStep):
    """The main text of each HTML page (documents the reader marked `html`; others pass as they are),
    by trafilatura or resiliparse; a page with no main text is dropped (`no_text`)."""

    name = "📝 HTML to text"
    type = "🛢 - EXTRAC"

    def __init__(self, backend: Literal["trafilatura", "resiliparse"] = "trafilatura",
                 favor_precision: bool = True, include_tables: bool = True) -> None:
        super().__init__()
        self.backend, self.favor_precision, self.include_tables = backend, favor_precision, include_tables
        if backend == "resiliparse":
            require("resiliparse.extract.html2text", "web", "prepare.extractor.backend=resiliparse")
        else:
            require("trafilatura", "web", "HTML extraction")

    def extract(self, html: str) -> str:
        if self.backend == "resiliparse":
            from resiliparse.extract.html2text import extract_plain_text

            return extract_plain_text(html, main_content=True, alt_texts=False)
        import trafilatura

        return trafilatura.extract(html, favor_precision=self.favor_precision, include_tables=self.include_tables,
                                   include_comments=False, deduplicate=False) or ""

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update("total")
            if doc.metadata.pop("html", False):
                with self.track_time():
                    doc.text = self.extract(doc.text).strip()
                if not doc.text:
                    self.stat_update("dropped", "dropped_no_text")
                    continue
            self.stat_update("forwarded")
            yield doc


class LanguageFilter(BaseFilter):
    """Keep documents in `languages` (ISO 639-1 codes; null: any) identified with at least `threshold`
    confidence, by py3langid (its model ships inside the package) or a fastText model file (`model`, e.g.
    lid.176.bin, labels `__label__xx`). Sets metadata `language` and `language_score`."""

    name = "🌍 Language"

    def __init__(self, languages: Optional[list[str]] = None, threshold: Ratio = 0.65,
                 model: Optional[str] = None) -> None:
        super().__init__()
        self.languages = set(languages) if languages else None
        self.threshold, self.model = threshold, model
        if model is not None and not Path(model).is_file():
            raise UserError(f"prepare.language.model: no fastText model file at {model}")
        self._identify = None

    def _identifier(self):
        if self._identify is None:
            if self.model:
                fasttext = require("fasttext", "web", "prepare.language.model")
                ft = fasttext.load_model(self.model)

                def identify(text: str) -> tuple[str, float]:
                    labels, scores = ft.predict(" ".join(text.split())[:10000])
                    return labels[0].removeprefix("__label__").split("_")[0], float(scores[0])
            else:
                langid = require("py3langid.langid", "web", "language identification")
                model = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)

                def identify(text: str) -> tuple[str, float]:
                    lang, score = model.classify(text[:10000])
                    return lang, float(score)
            self._identify = identify
        return self._identify

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lang, score = self._identifier()(doc.text)
        doc.metadata["language"], doc.metadata["language_score"] = lang, round(score, 4)
        if self.languages is not None and lang not in self.languages:
            return False, "other_language"
        if score < self.threshold:
            return False, "unsure_language"
        return True


class UrlBlocklist(BaseFilter):
    """Drop documents whose URL's host is (or is under) a blocked domain, or whose URL starts with a
    blocked prefix: from `domains`/`urls` and from `file` (one domain or URL per line, # comments)."""

    name = "⛔ URL blocklist"

    def __init__(self, domains: Optional[list[str]] = None, urls: Optional[list[str]] = None,
                 file: Optional[str] = None) -> None:
        super().__init__()
        self.domains = {d.lower().strip(".") for d in domains or []}
        self.urls = list(urls or [])
        if file is not None:
            try:
                lines = Path(file).read_text().splitlines()
            except OSError as exc:
                raise UserError(f"prepare.url_filter.file: cannot read {file}: {exc.strerror}") from None
            for line in (ln.split("#")[0].strip() for ln in lines):
                if "/" in line:
                    self.urls.append(line)
                elif line:
                    self.domains.add(line.lower().strip("."))

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        url = doc.metadata.get("url")
        if not url:
            return True
        host = (urlsplit(url).hostname or "").lower()
        parts = host.split(".")
        if any(".".join(parts[i:]) in self.domains for i in range(len(parts))):
            return False, "blocked_domain"
        if any(url.startswith(prefix) for prefix in self.urls):
            return False, "blocked_url"
        return True
