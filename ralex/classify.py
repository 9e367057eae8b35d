"""Task classification: does this coding task need the smart model or will the cheap one do?

Pure and fast (a few regex scans, well under a millisecond for a typical task). The text is
hostile: the scorer reads a bounded excerpt (:func:`excerpt`) and no pattern retries a run of text
from every start (overlapping or unbounded quantifiers are made possessive or bounded), so a
classification costs a few milliseconds at most whatever the request holds. The scorer adds weighted evidence
for *breadth and difficulty* (design, diagnosis, concurrency, security, migrations, scale,
scope over a whole system) and subtracts evidence for *small, local, mechanical edits* (typos,
renames, docstrings, one value in one named file). Each matched signal is kept so the decision
can explain itself.

The signal families are general categories of software work, not phrases from any one data
set; `bench/router_bench.py` measures them on the labelled dev set and on a held-out set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

TaskClass = Literal["cheap", "smart"]


@dataclass(frozen=True, slots=True)
class Signal:
    """One family of evidence: a name for explanations, a weight, and a pattern."""

    name: str
    weight: float
    pattern: re.Pattern[str]


def _sig(name: str, weight: float, pattern: str) -> Signal:
    return Signal(name, weight, re.compile(pattern))  # matched against lower-cased text


# Positive weight pushes towards smart, negative towards cheap.
SIGNALS: Final[tuple[Signal, ...]] = (
    # --- breadth and difficulty -------------------------------------------------------------
    _sig("design", 3.0, r"\b(architect\w*|design(ing)?\b|redesign\w*|restructur\w*|re-?organi[sz]\w*"
         r"|decoupl\w*|modulari[sz]\w*|untangl\w*|boundar(y|ies)|proper (package|table|module|abstraction|api|layer)|clean up the mess|messy|abstraction\w*|domain (logic|model)|separation of concerns"
         r"|dependency (graph|inversion)|circular (import|dependenc)\w*)"),
    _sig("refactor", 2.5, r"\b(refactor\w*|rewrite|rework|overhaul\w*|split \w+ into|extract \w+ (layer|service))"),
    _sig("diagnosis", 3.0, r"\b(analy[sz]\w*|investigat\w*|diagnos\w*|root cause|figure out|find out|"
         r"why (is|are|does|do|did|would|the)\b|what causes|what('?s| is) (causing|making|behind)|what could cause|causes? of|debug(ging)? (this|the|why|it|our)\b|profil(ing|er)\b|profile (the|this|it|our)\b|bottleneck\w*"
         r"|help me (find|understand|track)|find (out )?why|which one is right|track down|get(s)? slower|regression)"),
    _sig("hard-runtime", 3.0, r"\b(concurren\w*|race condition\w*|races?\b(?! (car|track|game))|deadlock\w*|thread(s|ed|ing|-safe)?\b"
         r"|parallel\w*|asynchron\w*|distributed|consisten(t|cy)\b|replicat\w*|shard\w*|partition\w*"
         r"|scal(e|ing|able|ability)\b|performance|optimi[sz]\w*|latency|throughput|memory (leak|usage)"
         r"|leak(s|ing)?\b|segfault\w*|crash(es|ing)?\b|intermittent\w*|randomly|flaky|under load"
         r"|cpu[- ]bound|i/o[- ]bound|(running |run |runs )?out of memory|slow(er|ness)?\b|faster|speed (it )?up|laggy|freez\w*|hammered|re-?renders?\b|cache (cluster|invalidation)|load balancer|eventual)"),
    _sig("security", 3.0, r"\b(secur\w*|vulnerab\w*|exploit\w*|threat model|jwt|oauth\w*|oidc|sso|saml|auth\b"
         r"|authenticat\w*|authori[sz]\w*|credentials?|secrets?\b|leaked|rotate (them|the|keys?)|abuse|d?dos\b|encrypt\w*|pentest\w*|idor|ssrf|rce\b|privilege escalation"
         r"|key (storage|rotation|management)|injection|xss|csrf|row[- ]level|permission model|sandbox\w*)"),
    _sig("big-change", 3.0, r"\b(migrat(e|ing) (from|to|our|the \w+ (to|from))|migrating|online migration|can'?t lock|without locking|port (it |this |the \w+ )?(to|from)\b|multi-?tenan\w*|state machine"
         r"|consistent hashing|protocol|backward(s)? compat\w*|zero[- ]downtime|resum\w*|idempoten\w*"
         r"|lifecycle|conflicts?\b|transaction(al|s)?\b|schema (change|design)|data model|fuzzy|ranking|algorithm"
         r"|end[- ]to[- ]end|ci/cd pipeline|pipeline|blue[/-]green)"),
    # Mechanical-sounding verbs over a whole codebase, many files or a framework's major version.
    _sig("wide-change", 4.0, r"\b(convert|migrat\w*|port|move|switch|replace|upgrad\w*|rewrite)\b[^.?!\n]{0,40}"
         r"\b(whole|entire|all of (the|our)|every (file|module|service|page|component))\b"
         r"|\b(used|called|referenced|imported) in (about |around |roughly |~)?\d{2,} (files|places|modules|services)"
         r"|\b\d{2,}\+? (files|modules|services|repos|call ?sites)\b"
         r"|\b(upgrad\w*|migrat\w*|move|switch|port)\b[^.?!\n]{0,30}\b(django|rails|react|angular|vue|spring|laravel|next(\.js)?"
         r"|python|node|java|\.net|symfony|flask|express|webpack|kotlin|scala|postgres\w*|mysql|elasticsearch"
         r"|kubernetes|k8s|terraform|ruby)\b[^.?!\n]{0,25}\d"),
    _sig("judgement", 2.5, r"\b(review\w*|audit\w*|strateg\w*|propos\w*|plan(ning)?\b|trade-?offs?|what fits"
         r"|which (one|tool|library|framework|approach|option|db|database) (is|should|fits|would)|move (off|away from)"
         r"|alternatives?\b|\bvs\.?\b|how should (we|i)\b|does it matter|should (we|i|it|the \w+( \w+)?)\b[^?]{0,80}\bor\b"
         r"|\bshould\b[^?]{0,60}\b(live|go|belong|sit|happen|run)\b[^?]{0,40}\bor\b"
         r"|evaluat\w*|decide|recommend\w*|best (way|approach)|pros and cons|approach(es)? for|compare)"),
    _sig("scope", 2.0, r"\b(whole|entire|across|codebase|code base|repositor\w*|this repo\b|project structure"
         r"|(all|every) (the )?(\w+ )?(modules?|services?|components?|endpoints?|packages?|layers?|handlers?)"
         r"|component tree|system[- ]wide|the (app|system|project)\b|our (app|system|stack|platform))"),
    _sig("symptom", 2.5, r"\b(sometimes|occasional(ly)?|intermittent(ly)?|randomly|every (few|other|now)"
         r"|keeps? (\w+ing|on \w+ing)|after (upgrading|updating|we|the (upgrade|update|deploy\w*|migration|release))"
         r"|since (last|we|the|yesterday|this)|no idea|idk\b|not sure why|don'?t know why|weird\w*|strange\w*"
         r"|wrong (when|for|after|on|in|since|results?|totals?|dates?|numbers?|prices?)|off by|no longer"
         r"|passes locally|works locally|on my machine|\b\d+ (in|out of) \d+\b|fails? (on|in|when|with|about)"
         r"|in prod(uction)?\b|(is|are) wrong\b|\bbug where\b|nothing in the logs|silently"
         r"|after (a few|several|~?\d+\s?(h|hrs?|hours?|days?|d|min\w*|weeks?))\b|(sent|charged|created|processed|runs?) twice|duplicat\w*|ends? up|empty\b"
         r"|dropp(ing|ed|s)\b|overwrit\w*|sluggish|stuck|hang(s|ing)?\b|oom\b|killed|exit code"
         r"|5\d\d(s|\b)|corrupt\w*|(doesn'?t|does not|stopped|isn'?t|not) work\w*|broke\b|breaks\b|broken\??$|\?\?"
         r"|different (results?|row counts?|counts?|numbers|values|outputs?|answers)|(don'?t|doesn'?t) add up"
         r"|something('s| is) (off|wrong|weird)|\bis off\b|\bnegative\b|\bnan\b|jitter\w*|drains?\b|flicker\w*"
         r"|(users|customers|people) (say|report|complain|see)|show(s|ing)? (yesterday|stale|old|wrong)\w*"
         r"|when \w+ drops|only (with|on|when|for|in prod|after|post|get))"),
    _sig("affects-some", 1.5, r"\b(some|certain|a few|many|big|large) (users|customers|people|accounts|requests"
         r"|clients|uploads|orders|jobs|tenants|devices|browsers)\b|\bonly on (some|certain|older)|\b(two|multiple) (people|users|requests|workers) "
         r"|same (time|moment)|simultaneous\w*|at once\b"),
    _sig("coordination", 1.5, r"(\band (update|fix|change|migrate|wire|adapt|port) (all|every|both|the \w+ "
         r"(clients?|callers|tests|consumers))|\ball (the )?callers\b|\bboth the \w+ and\b|\bconsolidat\w*"
         r"|\bproperly\b|\beverywhere\b|find every (place|usage|call)|go through (the|our) (code|codebase|repo)|fix them all|\bboth \w+ (clients|apps|services)|can'?t happen again|\bget (us|it|ci|the build) (green|passing)|\bwire (it|this) (into|up)"
         r"|(different|multiple|several|many) (modules|files|services|packages|places|repos)|\bmonorepo)"),
    _sig("correctness", 2.0, r"\b(sound(ness)?\b|invariants?|unsafe\b|undefined behaviou?r|edge cases"
         r"|correct(ness)? (of|under|when)|proof|prove|formally|lock[- ]free|memory (model|ordering)|atomic\w*)"),
    _sig("open-question", 1.5, r"(what should (we|i) do|how should (we|i)\b|any ideas|\bideas\b|,? help\W*$|^help\b"
         r"|is (it|this|our \w+) (actually|really)|best practice for (our|this))"),
    _sig("feature", 2.0, r"\b(undo(?! (the |my |a )?(last )?(git )?commit)|redo|offline|search (to|for|across|feature|engine)|facets?|typo toleran\w*|sync(hroni[sz]\w*)?( later)?\b|real-?time|collaborat\w*"
         r"|feature flags?|rollouts?|targeting|notification system|permissions? system|plugin system"
         r"|i18n|internationali[sz]\w*|rate limit\w*|background jobs?|job queue|webhooks?|\w+ system\b)"),
    _sig("perf-number", 1.5, r"(\b(takes?|took|taking|is|at|to|under|below) ~?\d+(\.\d+)?\s?(ms|s|sec\w*|min\w*"
         r"|hours?|gb|mb)\b|\b(cut|get|bring) (it|this|that|\w+) (down|under)|\bexplain (analyze|output)"
         r"|\bseq scan)"),
    _sig("scale", 2.0, r"(\b~?\d+(\.\d+)?\s*(million|billion|[mbk])\s+(rows|records|users|requests|events|items"
         r"|products|documents|messages|customers|lines|files|keys|objects|entries)|\bmillions?\b"
         r"|\bbillions?\b|\bat scale\b|\bhigh[- ]traffic\b)"),
    _sig("build", 1.5, r"\b(implement\w*(?! `)|build (a|an|the)|from scratch|new (service|subsystem|feature|module))"),
    _sig("explain-system", 2.0, r"\b(explain|walk me through|how does) (the |our |this )?(architecture|"
         r"design|system|codebase|repo\w*|flow|data flow|whole)"),
    _sig("preserve-behaviour", 1.5, r"\b(keeping|keep|preserv\w*) (the )?(behaviou?r|api|semantics|compatib\w*)"
         r"|(doesn'?t|does not|won'?t|nothing) breaks?\b"
         r"|behaviou?r identical|without (breaking|changing|losing|downtime)"),
    _sig("test-strategy", 1.5, r"\b(test strategy|testing strategy|test plan|coverage strategy|almost no tests)"),
    # --- small, local, mechanical -----------------------------------------------------------
    _sig("cosmetic", -4.0, r"\b(typos?(?! toleran)|(broken|dead) link|spelling|misspell\w*|docstrings?|comments?|commented[- ]out|(re)?format (the|this|it|all|\w+\.\w+)|formatter|black style|prettier|changelog"
         r"|lint\w*|whitespace|indent\w*|newline|trailing|line breaks?|alphabetical\w*|capitali[sz]\w*"
         r"|wording|reword\w*|punctuation|colou?r|font|padding|margin|blue(?![/-]green)|red|(?<![/-])green|grey|gray|black|white|copyright"
         r"|title of|page say|button text|the text of)\b"),
    _sig("rename", -2.5, r"\b(renam\w*|rename \w+ to|change ['\"]?\w+['\"]? to ['\"]?\w+)"),
    # Whitespace runs are possessive (`\s*+`): each run is read once, not re-split between neighbours.
    _sig("small-edit", -1.5, r"^\s*+([\w#+. ]{1,20}:\s++)?(hi!?,?\s++)?(pls|please|can you|could you( please)?)?\s*+(quick(ly)?:?\s++)?(add|convert|remove|delete|drop|change|replace|update"
         r"|bump|set|put|move|fix|close|use|print|log|return|insert|wrap|swap|sort|reorder|rearrange|center|centre|align|mark|give|increase|decrease"
         r"|raise|lower|pin|upgrade|import|export|expose|hide|show|enable|disable|turn)\b"),
    _sig("smallness", -2.0, r"\b(quick(ly)?|simple|small|tiny|minor|trivial|one[- ]liners?|single line"
         r"|one-?word|a couple of lines|(just|only|probably) needs?)\b"),
    # A path is read from its first character once (`(?<![\w/-])`, possessive runs), not from every
    # word boundary inside it: "a-b-c-...-z" no longer costs quadratic time; the same texts match.
    _sig("local-target", -1.5, r"((?<![\w/-])[/-]*+\w[\w/-]*+\.(py|js|jsx|ts|tsx|go|rs|java|kt|kts|swift|m|scala|dart|ex|exs|vue|svelte|tf|hcl|rb|php|c|h|cpp|cs|cfg|toml|ya?ml"
         r"|json|md|css|scss|html|sql|sh|ini|txt|env|lock|conf|xml|gradle|bas|vba)\b|\b(makefile|dockerfile|package\.json)\b|`[^`\n]{1,60}`|\b\w+\(\)|\bin the same file\b|\bat the (top|bottom)"
         r" of\b|\bline \d+\b|#[0-9a-f]{3,6}\b)"),
    # "convert this ... to": the gap stops at the next "convert this" (which is tried in its turn), so
    # each character is crossed once; the same texts match as with a plain `.*`, in linear time.
    _sig("instead-of", -1.5, r"\b(instead of|(convert|turn) (this|the|it)\b"
         r"(?:(?!\b(?:convert|turn) (?:this|the|it)\b).)*? (in)?to\b|from \S+ to \S+$)"),
    _sig("small-thing", -1.5, r"\b(default value|copyright( year)?|contact (address|email)|(email|ip) address|port \d+|parameter|argument|flag|constant|env(ironment)? var\w*|log"
         r" (message|line|level)|error message|assert\w*|header|label|placeholder|tooltip|string|"
         r"dependenc(y|ies)|dev dependencies|version\b|deprecat\w*|cursor|finally block|type hints?|"
         r"return type|unused (import|variable)s?|import statement|test that|unit test for|a test (for|that)|"
         r"timeout value|max_\w+|getter|setter|readme|changelog|gitignore|\.gitignore)\b"),
    # A lookup: "how do I ...", optionally after naming the tool ("bash: how to ...", "in rust, what is ...").
    _sig("simple-question", -2.0, r"^\s*((in|with) [\w#+.]+,?\s+|[\w#+. ]{1,30}:\s+|[\w#+.]+( [\w#+.]+)? (?=how))?"
         r"(what('?s| is| are| does)(?! (causing|making|behind))|whats|how (do|can) (i|you)|how to"
         r"|what \w+( \w+)? (does|do|should i|to use)\b"
         r"|difference between|can you explain what|is there a way to)\b|\b(equivalent of|what'?s the difference|syntax (for|to)"
         r"|(the \w+ )?command (to|for)|cron expression)\b"),
    _sig("format-conversion", -2.0, r"\b(json|ya?ml|toml|csv|xml|ini|markdown|html)\s+(to|->|into)\s+"
         r"(json|ya?ml|toml|csv|xml|ini|markdown|html|table)\b"),
    _sig("value-change", -2.0, r"\b(change|set|bump|update|replace|switch)\b[^.?!\n]{0,60}\bfrom\s+[\d'\"`$~^]\S*\s+to\s+\S+"
         r"|\b(set|change|bump|increase|decrease|raise|lower) (the )?[\w.`'\"\[\]-]+ (to|=) ['\"`]?[\d$]"),
    # Another tool or library for the same job: a migration, however short the request.
    _sig("tech-switch", 3.0, r"\b(switch|move|convert|migrate|port)\b[^.?!\n]{0,30}\bfrom [a-z][\w.+-]*( [a-z][\w.+-]*)?"
         r" (to|into) [a-z]"),
    _sig("sweeping", 2.5, r"\b(replace|move|convert|migrate|rename|update|upgrade|bump|change|port)\b[^.?!\n]{0,30}"
         r"\b(all (of )?(the|our)\b|all dependencies)|\beverywhere\b|\bthe lot\b|\bin the (whole )?(repo|codebase)\b"),
    _sig("proofread", -3.0, r"\b(grammar|spell[- ]?check|proofread\w*)\b"),
    _sig("one-snippet", -1.5, r"\b(a|one) single (task|function|command|line|query|regex|step|rule|test|snippet)\b"),
)

SMART_THRESHOLD: Final = 0.0
"""Score at or above which a task goes to the smart model."""

_WORD = re.compile(r"\w+")
_QUOTED = re.compile(r"(?<![\w`])(['\"])[^'\"\n]{2,200}?\1(?!\w)")
"""Quoted phrases ('...' or "...") are content to insert, not a description of the work."""


READ_HEAD: Final = 1024
READ_TAIL: Final = 1024
"""How much of a task the classifier reads: its first and last characters. Every labelled prompt
(1,370 in the dev and held-out sets, the longest 726 bytes) fits in the head whole; a longer task (a
pasted log or file) keeps its opening and its closing question. Scoring costs ~2.5 us a character
(~40 scans), so the excerpt bounds a classification at a few milliseconds whatever the body size."""
_CUT: Final = "\n\u2026\n"
"""Between head and tail: a line break and no word, so no pattern reads across the cut as one phrase."""


def excerpt(text: str) -> str:
    """What :func:`classify` reads of ``text``: all of it, or its first and last characters."""
    if len(text) <= READ_HEAD + READ_TAIL:
        return text
    return text[:READ_HEAD] + _CUT + text[-READ_TAIL:]


def _unwrap(text: str) -> str:
    """A task sent whole in quotes (``"fix the typo in hello.py"``, as shells and some clients pass
    it) is the description itself, not a phrase quoted inside one."""
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"" \
            and stripped.find(stripped[0], 1, len(stripped) - 1) < 0:
        return stripped[1:-1]
    return text


@dataclass(frozen=True, slots=True)
class Classification:
    """Outcome of :func:`classify` with the evidence behind it."""

    label: TaskClass
    score: float
    matched: tuple[str, ...]

    def explain(self) -> str:
        evidence = ", ".join(self.matched) if self.matched else "no strong signals"
        return f"task looks {self.label} (score {self.score:+.1f}: {evidence})"


def classify(text: str, threshold: float = SMART_THRESHOLD) -> Classification:
    """Score a task description and label it cheap or smart.

    >>> classify("fix the typo in the error message of load_user").label
    'cheap'
    >>> classify("review this pull request for concurrency bugs").label
    'smart'
    """
    text = _QUOTED.sub(" quoted ", excerpt(_unwrap(text))).lower()
    score = 0.0
    matched: list[str] = []
    for signal in SIGNALS:
        match = signal.pattern.search(text)
        if match:
            score += signal.weight
            matched.append(f"{signal.name} '{match.group(0).strip()}'")
    words = len(_WORD.findall(text))
    # Long, multi-part requests are rarely mechanical edits.
    if words > 60:
        score += 2.0
        matched.append(f"long request ({words} words)")
    elif words > 30:
        score += 1.0
        matched.append(f"detailed request ({words} words)")
    if text.count("\n- ") + text.count("\n* ") + len(re.findall(r"\n\d+\.", text)) >= 3:
        score += 1.5
        matched.append("multi-step list")
    label: TaskClass = "smart" if score >= threshold else "cheap"
    return Classification(label=label, score=score, matched=tuple(matched))
