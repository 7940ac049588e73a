"""Generate a deterministic benchmark corpus in two formats from one random seed.

Each article is about 10 KB of Markdown: headings, paragraphs, bullet and numbered
lists, links (to other generated articles as ``/articles/<slug>/``, to outside
references, and now and then an Amazon ``?tag=`` affiliate link) and, for some, an FAQ.

* Letterpress: ``<slug>.md`` with YAML front matter (docs/writing-articles.md),
  ``status: published``, FAQ in the front matter.
* Pelican: ``<slug>.md`` with a Pelican metadata header (Title, Date, Category, Tags,
  Slug, Summary) and the same body text. Pelican has no FAQ field, so the FAQ is
  appended to the body as a ``## Frequently Asked Questions (FAQ)`` section, which is
  what Letterpress renders from it: both tools render the same text.

    python bench/corpus.py --letterpress DIR --pelican DIR [-n 1000] [--seed 2024]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

TARGET_BYTES = 10_000  # whole Letterpress file, front matter included
START = date(2024, 1, 1)
SPAN_DAYS = 730  # published dates spread over two years


def _words(text: str) -> list[str]:
    return text.split(", ")


CATEGORIES = [
    "Vitamins & Supplements",
    "Vitamin Deficiency Symptoms",
    "Minerals",
    "Gut Health",
    "Heart Health",
    "Sleep & Energy",
    "Healthy Aging",
    "Nutrition Basics",
]
SERIES = ["Symptom Decoder Series", "Kitchen Pharmacy", "Lab Results Explained"]
NUTRIENTS = _words(
    "vitamin D3, vitamin K2, vitamin B12, folate, magnesium, zinc, iron, vitamin C, "
    "omega-3 fatty acids, calcium, potassium, iodine, selenium, vitamin B6, thiamine, "
    "riboflavin, choline, vitamin A, vitamin E, copper"
)
SYMPTOMS = _words(
    "fatigue, muscle cramps, brittle nails, hair thinning, poor sleep, brain fog, "
    "tingling hands, low mood, frequent colds, joint stiffness, restless legs, dry skin, "
    "slow wound healing, heart palpitations, burning feet, pale skin, mouth ulcers, night "
    "blindness, headaches"
)
FOODS = _words(
    "leafy greens, salmon, sardines, eggs, natto, pumpkin seeds, lentils, almonds, "
    "yogurt, kefir, broccoli, beef liver, oysters, spinach, sweet potatoes, chickpeas, "
    "avocados, mushrooms, oats, hard cheese"
)
GROUPS = _words(
    "adults over 50, postmenopausal women, vegetarians, vegans, older adults, people "
    "taking metformin, endurance athletes, shift workers, people with coeliac disease, "
    "heavy coffee drinkers, pregnant women"
)
PROCESSES = _words(
    "energy production, bone mineralisation, nerve signalling, red blood cell formation, "
    "immune defence, muscle contraction, collagen synthesis, thyroid function, blood "
    "sugar control, DNA repair, calcium transport, hormone balance"
)
ADJECTIVES = _words(
    "gradual, subtle, common, hidden, persistent, mild, significant, well-documented, "
    "slight, measurable, surprising, steady"
)
TAGS = sorted(
    {n.lower() for n in NUTRIENTS}
    | {s.lower() for s in SYMPTOMS[:12]}
    | {"bone health", "heart health", "gut health", "sleep", "energy", "aging"}
)
EXTERNAL = [
    "https://ods.od.nih.gov/factsheets/list-all/",
    "https://www.ncbi.nlm.nih.gov/books/NBK1/",
    "https://www.who.int/health-topics/nutrition",
    "https://www.efsa.europa.eu/en/topics/topic/dietary-reference-values",
    "https://www.nhs.uk/conditions/vitamins-and-minerals/",
    "https://medlineplus.gov/vitamins.html",
]

SENTENCES = [
    "{Nutrient} plays a quiet but essential role in {process}.",
    "Many {group} notice {symptom} long before a blood test shows anything unusual.",
    "A {adjective} shortfall of {nutrient} can show up as {symptom} or {symptom2}.",
    "Foods such as {food}, {food2} and {food3} are reliable everyday sources of {nutrient}.",
    "Researchers have linked low {nutrient} intake to {adjective} changes in {process}.",
    "If you recognise {symptom}, it is worth asking whether your diet covers {nutrient}.",
    "The body cannot make {nutrient} on its own, so it has to come from food or supplements.",
    "Absorption of {nutrient} falls with age, which is why {group} are often advised to check "
    "their levels.",
    "Taking {nutrient} together with {nutrient2} may support {process} better than either alone.",
    "A simple change, like adding {food} to breakfast, can make a {adjective} difference.",
    "Doctors usually look at {symptom} together with other signs before suggesting a test.",
    "For {group}, the recommended daily amount of {nutrient} is often higher than for younger "
    "adults.",
    "Cooking methods matter: steaming {food} keeps more {nutrient} than boiling it.",
    "Some medicines interfere with {nutrient}, so {group} should review their prescriptions.",
    "It usually takes several weeks of consistent intake before {symptom} starts to ease.",
    "Too much {nutrient} from supplements can be as unhelpful as too little.",
    "The link between {nutrient} and {process} has been studied for decades.",
    "Keeping a short food diary for a week shows how often {food} actually appears on your plate.",
]
BULLETS = [
    "Eat {food} two or three times a week",
    "Pair {nutrient} with a meal that contains some fat",
    "Ask for a blood test if {symptom} lasts more than a month",
    "Check whether your multivitamin already contains {nutrient}",
    "Notice {adjective} signs such as {symptom}",
    "Store {food} away from light to protect its {nutrient}",
    "Spread supplements over the day instead of taking them all at once",
    "Talk to a pharmacist about {nutrient} and your current medicines",
    "Support {process} with regular movement and good sleep",
    "Combine {food} with {food2} for a simple balanced meal",
]
STEPS = [
    "Write down when {symptom} happens and how long it lasts.",
    "Review how often you eat {food} and {food2}.",
    "Ask your doctor whether a {nutrient} test makes sense for you.",
    "Start with food sources before reaching for supplements.",
    "Recheck your levels after eight to twelve weeks.",
    "Adjust the dose of {nutrient} only with professional advice.",
]
HEADINGS = [
    "What Is {Nutrient}?",
    "Why {Nutrient} Matters for {Process}",
    "How {Nutrient} Works in the Body",
    "Who Needs More {Nutrient}?",
    "Early Signs of Low {Nutrient}",
    "Best Food Sources of {Nutrient}",
    "{Symptom} and What It Can Mean",
    "How to Test Your {Nutrient} Levels",
    "Supplements: Forms, Doses and Timing",
    "Common Mistakes to Avoid",
    "{Nutrient} and {Nutrient2}: A Useful Pairing",
    "Lifestyle Habits That Support {Process}",
    "When to See a Doctor",
    "Practical Tips for Everyday Meals",
]
TITLES = [
    "{Nutrient} for {Process}",
    "{Symptom}: Could It Be Low {Nutrient}?",
    "The Role of {Nutrient} in {Process}",
    "{Adjective} Signs of {Nutrient} Deficiency",
    "Why {Group} Need {Nutrient}",
    "{Symptom} and {Symptom2}: What Your Body Is Telling You",
    "{Nutrient} and {Nutrient2}: How They Work Together",
    "Eating for {Process}: Start with {Food}",
]
QUESTIONS = [
    (
        "Is {nutrient} safe to take daily?",
        "Yes, for most people, when taken within the recommended amount. Ask your doctor if you "
        "take other medicines.",
    ),
    (
        "What is the best food source of {nutrient}?",
        "Foods such as {food} and {food2} are good everyday sources.",
    ),
    (
        "Can low {nutrient} cause {symptom}?",
        "It can be one of several causes. A blood test and a talk with your doctor give a clear "
        "answer.",
    ),
    (
        "How long does it take to correct low {nutrient}?",
        "Usually several weeks to a few months of consistent intake, depending on how low the "
        "levels were.",
    ),
    (
        "Should {group} take {nutrient} supplements?",
        "Many do benefit, but food comes first. See the [NIH fact sheets]({external}).",
    ),
    (
        "Does cooking destroy {nutrient}?",
        "Some is lost with long boiling; steaming or eating {food} raw keeps more of it.",
    ),
]


@dataclass
class Article:
    index: int
    slug: str
    title: str
    subtitle: str
    summary: str
    category: str
    tags: list[str]
    published: date
    series: str = ""
    faq: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""


def _slugify(text: str) -> str:
    out = "".join(c if c.isalnum() else " " for c in text.lower())
    return "-".join(out.split())


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _title_case(text: str) -> str:
    small = {"and", "or", "of", "for", "in", "on", "the", "a", "to", "with"}
    words = text.split(" ")
    return " ".join(
        w if (i and w in small) or w[:1].isupper() else _cap(w) for i, w in enumerate(words)
    )


class _Filler:
    """Fills ``{slot}`` placeholders with words drawn from the article's own topic."""

    def __init__(self, rng: random.Random, nutrient: str, symptom: str) -> None:
        self.rng = rng
        self.nutrient = nutrient
        self.symptom = symptom

    def values(self) -> dict[str, str]:
        r = self.rng
        nutrient = self.nutrient if r.random() < 0.6 else r.choice(NUTRIENTS)
        symptom = self.symptom if r.random() < 0.5 else r.choice(SYMPTOMS)
        foods = r.sample(FOODS, 3)
        v = {
            "nutrient": nutrient,
            "nutrient2": r.choice([n for n in NUTRIENTS if n != nutrient]),
            "symptom": symptom,
            "symptom2": r.choice([s for s in SYMPTOMS if s != symptom]),
            "food": foods[0],
            "food2": foods[1],
            "food3": foods[2],
            "group": r.choice(GROUPS),
            "process": r.choice(PROCESSES),
            "adjective": r.choice(ADJECTIVES),
            "external": r.choice(EXTERNAL),
        }
        v.update({k.capitalize(): _title_case(val) for k, val in list(v.items())})
        return v

    def fill(self, template: str) -> str:
        return _cap(template.format(**self.values()))


def _plan(rng: random.Random, n: int) -> list[Article]:
    """Titles, slugs, dates and metadata for every article (bodies come later)."""
    articles = []
    for i in range(n):
        nutrient, symptom = rng.choice(NUTRIENTS), rng.choice(SYMPTOMS)
        filler = _Filler(rng, nutrient, symptom)
        title = _title_case(filler.fill(rng.choice(TITLES)))
        slug = f"{_slugify(title)}-{i + 1}"
        subtitle = filler.fill(
            "A practical guide to {nutrient}, {symptom} and what {group} can do about it"
        )
        summary = filler.fill(rng.choice(SENTENCES))
        tags = sorted(set(rng.sample(TAGS, rng.randint(2, 4))))
        published = START + timedelta(days=rng.randrange(SPAN_DAYS))
        article = Article(
            i, slug, title, subtitle, summary, rng.choice(CATEGORIES), tags, published
        )
        if rng.random() < 0.1:
            article.series = rng.choice(SERIES)
        if rng.random() < 0.35:
            chosen = rng.sample(QUESTIONS, rng.randint(3, 5))
            article.faq = [(filler.fill(q), filler.fill(a)) for q, a in chosen]
        article.body = _body(rng, filler)  # placeholder links are resolved below
        articles.append(article)
    slugs = [a.slug for a in articles]
    for article in articles:
        article.body = _resolve_links(rng, article.body, slugs, article.slug)
    return articles


def _paragraph(rng: random.Random, filler: _Filler) -> str:
    sentences = [filler.fill(rng.choice(SENTENCES)) for _ in range(rng.randint(3, 6))]
    if rng.random() < 0.35:  # a link inside the paragraph; resolved later
        k = rng.randrange(len(sentences))
        kind = rng.choices(["internal", "external", "amazon"], weights=[6, 3, 1])[0]
        anchor = rng.choice(
            [
                "this guide",
                "our overview",
                "the full article",
                "a related read",
                "the research summary",
                "a practical example",
            ]
        )
        sentences[k] += f" See [{anchor}](@@{kind}@@) for more."
    return " ".join(sentences)


def _body(rng: random.Random, filler: _Filler) -> str:
    """About 10 KB of Markdown (with ``@@kind@@`` link placeholders)."""
    budget = TARGET_BYTES - 1700  # front matter, FAQ and the last section take the rest
    blocks = [_paragraph(rng, filler) for _ in range(rng.randint(2, 3))]
    headings = rng.sample(HEADINGS, len(HEADINGS))
    size = sum(len(b) + 2 for b in blocks)
    h = 0
    while size < budget:
        section = [f"## {filler.fill(headings[h % len(headings)])}"]
        h += 1
        section += [_paragraph(rng, filler) for _ in range(rng.randint(1, 3))]
        roll = rng.random()
        if roll < 0.45:
            items = rng.sample(BULLETS, rng.randint(3, 6))
            section.append("\n".join(f"- {filler.fill(b)}" for b in items))
        elif roll < 0.7:
            items = rng.sample(STEPS, rng.randint(3, 5))
            section.append("\n".join(f"{i}. {filler.fill(s)}" for i, s in enumerate(items, 1)))
        if rng.random() < 0.2:
            section.append(f"### {filler.fill('A closer look at {symptom}')}")
            section.append(_paragraph(rng, filler))
        if rng.random() < 0.15:
            section.append("> " + filler.fill(rng.choice(SENTENCES)))
        section.append(_paragraph(rng, filler))
        text = "\n\n".join(section)
        blocks.append(text)
        size += len(text) + 2
    return "\n\n".join(blocks) + "\n"


def _resolve_links(rng: random.Random, body: str, slugs: list[str], own: str) -> str:
    parts = body.split("@@")
    for i in range(1, len(parts), 2):
        kind = parts[i]
        if kind == "internal":
            target = own
            while target == own and len(slugs) > 1:
                target = rng.choice(slugs)
            parts[i] = f"/articles/{target}/"
        elif kind == "external":
            parts[i] = rng.choice(EXTERNAL)
        else:
            asin = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))
            parts[i] = f"https://www.amazon.com/dp/B0{asin}?tag=letterpress-20"
    return "".join(parts)


def _q(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def letterpress_text(a: Article) -> str:
    lines = [
        "---",
        f"title: {_q(a.title)}",
        f"slug: {a.slug}",
        f"subtitle: {_q(a.subtitle)}",
        f"summary: {_q(a.summary)}",
        f"category: {_q(a.category)}",
    ]
    if a.series:
        lines.append(f"series: {_q(a.series)}")
    lines += [
        f"tags: [{', '.join(a.tags)}]",
        "author: Editorial Team",
        f"published: {a.published.isoformat()}",
        "status: published",
    ]
    if a.faq:
        lines.append("faq:")
        for question, answer in a.faq:
            lines += [f"  - question: {_q(question)}", f"    answer: {_q(answer)}"]
    lines += ["---", "", a.body]
    return "\n".join(lines)


def pelican_text(a: Article) -> str:
    hour = 6 + a.index % 12
    lines = [
        f"Title: {a.title}",
        f"Date: {a.published.isoformat()} {hour:02d}:00",
        f"Category: {a.category}",
        f"Tags: {', '.join(a.tags)}",
        f"Slug: {a.slug}",
        "Authors: Editorial Team",
        f"Summary: {a.summary}",
        "",
        a.body.rstrip("\n"),
    ]
    if a.faq:
        lines += ["", "## Frequently Asked Questions (FAQ)"]
        for question, answer in a.faq:
            lines += ["", f"### {question}", "", answer]
    return "\n".join(lines) + "\n"


def generate(
    letterpress_dir: Path | None, pelican_dir: Path | None, n: int = 1000, seed: int = 2024
) -> list[str]:
    """Write ``n`` articles into each folder given (emptied first); return the slugs."""
    articles = _plan(random.Random(seed), n)
    for folder, render in ((letterpress_dir, letterpress_text), (pelican_dir, pelican_text)):
        if folder is None:
            continue
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for a in articles:
            (folder / f"{a.slug}.md").write_text(render(a), encoding="utf-8")
    return [a.slug for a in articles]


def _stats(folder: Path) -> str:
    sizes = sorted(p.stat().st_size for p in folder.glob("*.md"))
    if not sizes:
        return f"{folder}: empty"
    total = sum(sizes)
    return (
        f"{folder}: {len(sizes)} files, {total / 1e6:.2f} MB, mean {total / len(sizes):,.0f} B,"
        f" min {sizes[0]:,} B, max {sizes[-1]:,} B"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    work = Path(__file__).resolve().parent / ".work" / "corpus"
    parser.add_argument("--letterpress", type=Path, default=work / "letterpress")
    parser.add_argument("--pelican", type=Path, default=work / "pelican")
    parser.add_argument("-n", type=int, default=1000, help="number of articles (default 1000)")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    generate(args.letterpress, args.pelican, args.n, args.seed)
    print(f"generated {args.n} articles (seed {args.seed})")
    print("  " + _stats(args.letterpress))
    print("  " + _stats(args.pelican))
    texts = [p.read_text(encoding="utf-8") for p in args.letterpress.glob("*.md")]
    features = {
        "internal links": sum(t.count("](/articles/") for t in texts),
        "Amazon ?tag= links": sum(t.count("?tag=") for t in texts),
        "articles with an FAQ": sum("\nfaq:\n" in t for t in texts),
        "in a series": sum("\nseries:" in t for t in texts),
        "## headings": sum(t.count("\n## ") for t in texts),
    }
    print("  " + ", ".join(f"{v} {k}" for k, v in features.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
