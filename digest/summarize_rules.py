# ruff: noqa: RUF001
# Non-ASCII punctuation (full-width colons, dashes, curly quotes) is matched on purpose.
"""What a block or sentence *is*, by general rules: feed furniture, opening boilerplate,
author-summary labels, captions, labels and link lines.

The rules describe kinds of text (a note about how the work came about, a pointer to a
series, a byline, a request to subscribe) by their grammar, not by phrases seen in one feed.
"""

from __future__ import annotations

import re

from digest.summarize_html import Block

_I = re.IGNORECASE

# Feed and CMS furniture: the feed's own lines around a post.
_FURNITURE = [
    re.compile(
        r"^(?:published|posted|updated|last updated|originally posted)\s+(?:on|at|in|by)\b", _I
    ),
    re.compile(
        r"^[\s(\[]*(?:discuss(?: this(?: post)?)?|\d*\s*comments?|read more|read on|"
        r"continue reading|"
        r"keep reading|read the (?:full|rest|whole)\b.*|view (?:post|comments|on \w+)|"
        r"leave a (?:comment|reply)|share(?: this(?: post)?)?|permalink|reply|like|tweet|print|"
        r"\[?(?:…|\.\.\.)\]?)[\s.:!…»→›>)\]]*$",
        _I,
    ),
    re.compile(r"^the post\b.{1,300}\bappeared first on\b", _I),
    re.compile(r"\b(?:continue|keep) reading\b", _I),
    re.compile(r"^(?:\d+\s*(?:min(?:ute)?s?|m)\s+read|(?:estimated\s+)?reading time\b.*)$", _I),
]

# Labels that open a note about the post rather than the post: "Epistemic status: ...",
# "Content warning: ...", "Edit (June 5): ...", "Tags: ...", "Author: ...".
_NOTE_LABEL = re.compile(
    r"^[\s(\[*_]*(?:epistemic|confidence|credence|status|content|trigger|cw|tw|spoilers?|"
    r"disclaimers?|notes?|n\.?b\.?|edit(?:ed)?|updates?|updated|addendum|errata|corrections?|"
    r"context|meta|tags?|categories|topics?|filed|audio|podcast|listen|translations?|"
    r"translated|previously|previous|prev|next|series|sequence|crosspost(?:ed)?|cross-posted|"
    r"authors?|co-?authors?|by|written|posted|contributors?|editors?|edited|reviewed|"
    r"illustrations?|photos?|images?|cover|header|credits?|h/t|hat tip|via|source|sources|"
    r"paper|preprint|arxiv|code|github|repo(?:sitory)?|thread|slides|video|demo|website|"
    r"project page|blog|link|links|contact|press|media|tl;dr of series|length|word count|"
    r"acknowledge?ments?|thanks|funding|affiliations?)"
    r"(?:\s+[\w'’-]+){0,2}(?:\s*\([^)]{0,40}\))?\s*[:：—–]",
    _I,
)

_PATTERNS: dict[str, list[re.Pattern[str]]] = {
    "acknowledgement": [
        re.compile(
            r"^[\s(\[*_]*(?:(?:many|special|huge|big|sincere|warm)\s+)?(?:thanks|thank you)\b", _I
        ),
        re.compile(r"^[\s(\[*_]*(?:with|and)\s+(?:many\s+|special\s+)?thanks\b", _I),
        re.compile(
            r"\b(?:i'?m|i am|we'?re|we are|i'?d like to|we'?d like to|we would like to|"
            r"i would like to)\s+"
            r"(?:\w+\s+){0,2}(?:grateful|thankful|indebted|thank|acknowledge)\b",
            _I,
        ),
        re.compile(r"^[\s(\[*_]*acknowledge?ments?\b", _I),
        re.compile(
            r"\b(?:all\s+)?(?:remaining\s+)?(?:mistakes|errors)\s+are\s+(?:my|our|mine)\b", _I
        ),
        re.compile(
            r"^[\s(\[*_]*(?:written|drafted|edited|co-?written|produced|researched)\s+"
            r"(?:\w+\s+)?(?:with|by|in collaboration with|together with)\b",
            _I,
        ),
        re.compile(
            r"\b(?:this|the|our|my)\s+(?:post|work|project|essay|article|research|piece|writeup)\s+"
            r"(?:is|was|forms)\s+(?:a\s+|one\s+)?part\s+of\b",
            _I,
        ),
        re.compile(r"\b(?:mentored|supervised|advised)\s+by\b", _I),
        re.compile(r"\b(?:funded|sponsored|supported)\s+by\s+(?:a\s+grant|(?-i:[A-Z]))", _I),
        re.compile(
            r"\b(?:work|research|project|post|writeup|write-up|paper|piece|essay|report|analysis|"
            r"this)\b[^.]{0,60}\b(?:done|conducted|carried out|completed|produced|written|prepared|"
            r"developed|performed|started|begun|undertaken)\b[^.]{0,30}\b(?:as part of|"
            r"as a part of|"
            r"during|while at|at|for|under|through|in collaboration with|with support)\b",
            _I,
        ),
        re.compile(
            r"\bas (?:a )?part of\b[^.]{0,60}\b(?:program|programme|fellowship|sprint|residency|"
            r"course|scholars?|cohort|hackathon|internship|bootcamp|camp|initiative|grant|"
            r"competition|workshop|seminar|class)\b",
            _I,
        ),
    ],
    "crosspost": [
        re.compile(r"\bcross-?post(?:ed|ing)?\b", _I),
        re.compile(r"\b(?:originally|first)\s+(?:published|posted|appeared|written|shared)\b", _I),
        re.compile(
            r"\b(?:also|originally)\s+(?:available|published|posted)\s+(?:on|at|in|over at)\b", _I
        ),
        re.compile(
            r"\bthis (?:post|article|essay|piece|newsletter)\b[^.]{0,20}"
            r"\b(?:appeared|was published)\b",
            _I,
        ),
        re.compile(r"\b(?:mirrored|reposted|republished|syndicated)\s+(?:from|with|here)\b", _I),
    ],
    "sequence": [
        re.compile(
            r"\b(?:part|post|chapter|episode|entry|installment|instalment|lecture|issue|edition|"
            r"volume|essay|article)\s+(?:#\s*)?(?:\d+|[ivx]+|one|two|three|four|five|six|seven|"
            r"eight|nine|ten)\s*(?:of|in|/|out of)\s+\w+",
            _I,
        ),
        re.compile(
            r"\b(?:this is|this post is|this essay is|this article is|welcome to|here is|"
            r"here'?s)\s+"
            r"(?:the\s+|my\s+|our\s+)?(?:\w+\s+)?(?:first|second|third|fourth|fifth|sixth|seventh|"
            r"eighth|ninth|tenth|last|final|next|latest|concluding|\d+(?:st|nd|rd|th))\b[^.]{0,40}"
            r"\b(?:post|part|entry|installment|instalment|chapter|episode|article|essay|issue)\b",
            _I,
        ),
        re.compile(r"\b(?:sequence|series)\b[^.]{0,40}\b(?:on|about|of|in|called|titled)\b", _I),
        re.compile(
            r"^[\s(\[*_]*(?:in\s+)?(?:my|our|the|a)\s+(?:last|previous|prior|earlier|preceding|first|"
            r"companion|recent)\s+(?:post|article|essay|piece|installment|instalment|entry|part)\b",
            _I,
        ),
        re.compile(
            r"^[\s(\[*_]*(?:last|previous|prior)\s+(?:post|article|essay|installment|entry|part)\b",
            _I,
        ),
        re.compile(
            r"^[\s(\[*_]*(?:this|it)\s+is\s+(?:a\s+)?(?:follow-?up|sequel|continuation)\b", _I
        ),
        re.compile(r"^[\s(\[*_]*(?:follow-?up|sequel)\s+to\b", _I),
    ],
    "call_to_action": [
        re.compile(
            r"^[\s(\[*_]*(?:apply|join|subscribe|register|sign up|donate|follow us|follow me|"
            r"share this|pre-?order|buy|get (?:your|the) (?:copy|tickets?))\b",
            _I,
        ),
        re.compile(
            r"\b(?:subscribe|unsubscribe|sign\s*-?up|signup|join\s+(?:our|my|the|us)\s+\w*\s*"
            r"(?:newsletter|mailing list|list|discord|community|waitlist|slack|server|patreon)|"
            r"follow\s+(?:me|us)\b|support\s+(?:me|us|this|my|our)\b|become\s+a\s+(?:patron|member|"
            r"paid|supporter|subscriber)|donat(?:e|ing)\b|pre-?order|register\s+(?:now|here|today|for)|"
            r"apply\s+(?:now|here|today|by)|rsvp\b|click\s+here|tap\s+here|share\s+this|"
            r"let\s+(?:me|us)\s+know\s+in\s+the\s+comments|consider\s+(?:joining|subscribing|"
            r"supporting|donating|applying|sharing|signing)|you\s+can\s+(?:support|subscribe)|"
            r"hiring\b[^.]{0,30}\bapply|we'?re\s+hiring)",
            _I,
        ),
        re.compile(
            r"^[\s(\[*_]*(?:see|read|find|download|watch|listen to|view|get)\s+(?:it\s+|the\s+)?"
            r"(?:full\s+|whole\s+|original\s+)?(?:paper|post|article|preprint|report|thread|code|"
            r"video|talk|episode|transcript|slides|repo|details|more)?\b[^.]{0,30}\b(?:here|below|"
            r"at|on)\b[^.]{0,40}[.!]?$",
            _I,
        ),
    ],
    "pointer": [
        # A short sentence that only points elsewhere: "For the background, see here and here."
        re.compile(
            r"^[^.!?]{0,80}\b(?:see|read|check out)\s+(?:here|this|these|there)\b"
            r"(?:,?\s+(?:and\s+)?here)*\W*$",
            _I,
        ),
    ],
    "note_to_editors": [
        re.compile(
            r"^[\s(\[*_]*(?:notes?\s+(?:to|for)\s+(?:the\s+)?editors?|editor'?s'?\s+note|ed\.?\s+note|"
            r"press\s+(?:release|contact)|media\s+(?:contact|inquiries|enquiries)|"
            r"for\s+immediate\s+release|embargoed)",
            _I,
        ),
        re.compile(r"\[\s*editor'?s'? note\b", _I),
    ],
    "byline": [
        re.compile(
            r"^[\s(\[*_]*(?i:by|written by|posted by|guest post by|words by|a guest post by|"
            r"with|joint work with|co-?written with|interview by|translated by)\s+"
            r"(?:[A-Z][\w.'’-]*|&|and|,|\s|\([^)]*\))+[\s.]*$"
        ),
    ],
    "caption": [
        re.compile(
            r"^[\s(\[*_]*(?:figure|fig\.?|table|image|img|photo|picture|chart|graph|plot|diagram|"
            r"illustration|source|credit|caption|screenshot|video)\s*\d*[a-z]?\s*[:.|—–]",
            _I,
        ),
    ],
}

# Author summaries: the label and the forms it takes around the text.
SUMMARY_LABEL = (
    r"(?:tl\s*[;:,.]?\s*dr|too long[,;]?\s*didn'?t read|executive summary|summary|abstract|"
    r"overview|key (?:take-?aways|points|findings|results|claims|ideas)|main (?:take-?aways|points|"
    r"findings|results|claims|ideas)|take-?aways|in (?:brief|short|a nutshell)|"
    r"bottom line(?: up front)?|bluf|short version|the gist|zusammenfassung|kurzfassung|"
    r"das wichtigste in kürze|en bref|résumé|en résumé|аннотация|краткое содержание|кратко|"
    r"резюме|摘要|概要|总结|要点)"
)
_LABEL_ONLY = re.compile(rf"^[\s(\[*_#]*{SUMMARY_LABEL}[\s)\]*_]*[:：.\-—–]?[\s)\]*_]*$", _I)
_LABEL_INLINE = re.compile(rf"^[\s(\[*_]*{SUMMARY_LABEL}[\s)\]*_]*(?:[:：—–]|-\s|\.\s)\s*", _I)
_TLDR = re.compile(r"^[\s(\[*_]*(?:tl\s*[;:,.]?\s*dr)[\s)\]*_]*[:：.\-—–]?\s*", _I)
_TOC_HEADING = re.compile(
    r"^[\s*_]*(?:table of contents|contents|toc|in this (?:post|article|issue|essay)|outline|"
    r"on this page|inhalt|inhaltsverzeichnis|sommaire|table des matières|содержание|"
    r"оглавление|目录)"
    r"[\s*_:]*$",
    _I,
)

_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’»)\]]*$")
_LINK_LINE = re.compile(
    r"^(?:[\w .'’&/()-]{1,40}[:：]\s*)?(?:<?(?:https?://|www\.)\S+>?[\s,;|·]*)+$", _I
)


def _case_free(pattern: re.Pattern[str]) -> tuple[re.Pattern[str], bool]:
    """`pattern` as (pattern, match lower-cased text). Case-insensitive matching is slow in
    Python's engine, so a pattern that does not care about case is run, without the flag, on
    text lower-cased once; one that does (an inline flag, a capital range) stays as it is."""
    source = pattern.pattern
    if not pattern.flags & re.IGNORECASE or "(?-i" in source or "(?i" in source or "A-Z" in source:
        return pattern, False
    return re.compile(source), True


_FAST_PATTERNS = {kind: [_case_free(p) for p in ps] for kind, ps in _PATTERNS.items()}


def is_furniture(text: str) -> bool:
    return any(p.search(text) for p in _FURNITURE)


def boilerplate_kind(text: str) -> str:
    """The kind of opening boilerplate `text` is (a block or a sentence), or ''."""
    words = text.split()
    if len(words) > 60:
        # A long paragraph is judged by how it opens: a note is short, content runs on.
        text = " ".join(words[:40])
    if _NOTE_LABEL.match(text) and not _LABEL_INLINE.match(text):
        return "note"
    lower = text.lower()
    for kind, patterns in _FAST_PATTERNS.items():
        if any(p.search(lower if low else text) for p, low in patterns):
            return kind
    if _LINK_LINE.match(text):
        return "link_line"
    return ""


def is_link_line(block: Block) -> bool:
    if block.link_share >= 0.6 or _LINK_LINE.match(block.text):
        return True
    # "Paper | Code | Demo", "Huggingface, Github": a few linked names and separators.
    words = block.text.split()
    return block.link_share >= 0.3 and len(words) <= 10 and not _SENTENCE_END.search(block.text)


def is_label(block: Block) -> bool:
    """A short unpunctuated line used as a heading (incl. bold pseudo-headings, timestamps)."""
    if block.kind == "heading":
        return True
    text = block.text
    if _SENTENCE_END.search(text) and not re.search(r"\[\d{1,2}:\d{2}(?::\d{2})?\]$", text):
        return False
    return len(text.split()) <= 14


def ends_sentence(text: str) -> bool:
    return bool(_SENTENCE_END.search(text))


def summary_label(block: Block) -> tuple[bool, str]:
    """(is a summary label, the text after the label): a heading or label-only line returns
    (True, ''); an inline "TL;DR: text" returns (True, 'text'); anything else (False, '')."""
    text = block.text
    if _LABEL_ONLY.match(text):
        return True, ""
    if block.lead_bold and _LABEL_ONLY.match(block.lead_bold):
        rest = text[len(block.lead_bold) :] if text.startswith(block.lead_bold) else text
        return True, rest.lstrip(" :：.-—–)]*_")
    if block.kind != "heading":
        match = _LABEL_INLINE.match(text) or _TLDR.match(text)
        if match and match.end() < len(text):
            return True, text[match.end() :].strip()
    return False, ""


def is_toc_heading(text: str) -> bool:
    return bool(_TOC_HEADING.match(text))


# -- what a sentence does ---------------------------------------------------------------
# Cue phrases of a sentence that states what the post is about or what it finds ("In this
# post I argue", "We show", "The main result is", "My plan is"): the classic cue-phrase
# feature of extractive summarizers, English only.
_CLAIM = re.compile(
    r"\b(?:(?:in|with) this (?:post|paper|essay|article|piece|report|work|write-?up)|"
    r"this (?:post|paper|essay|article|piece|report|work) (?:argues|shows|presents|describes|"
    r"explains|introduces|proposes|explores|examines|discusses|lays out|outlines|covers|"
    r"is about|asks|looks)|"
    r"(?:we|i)(?:'ll|’ll| will| can| now)? (?:argue|show|find|found|propose|present|introduce|"
    r"build|built|develop|train|study|measure|demonstrate|describe|explain|discuss|explore|"
    r"investigate|test|evaluate|release|launch|launched|examine|claim|suggest|conclude|"
    r"identify|estimate|compare|outline|review|make the case|improved|have improved|set out)|"
    r"(?:here|below|today),? (?:i|we)\b|"
    r"(?:the|our|my) (?:main|key|central|core) (?:result|finding|claim|point|argument|idea|"
    r"contribution|takeaway)s?|"
    r"(?:our|my|these) (?:results|findings|experiments) (?:show|suggest|indicate|demonstrate)|"
    r"the (?:paper|authors?|study) (?:argues?|shows?|proposes?|claims?|finds?)|"
    r"(?:my|our) (?:plan|goal|aim|purpose|intent|hope) (?:here |in this post |today )?is)\b",
    _I,
)
# Openings that set up a hypothetical or a question rather than say what the post says.
_TEASER = re.compile(r"^[\s\"“‘'(]*(?:suppose|imagine|picture this|what if|have you ever)\b", _I)
# A sentence that leans on the one before it ("This means...", "But...").
_ANAPHORIC = re.compile(
    r"^[\s\"“‘'(]*(?:this|that|these|those|it|they|he|she|but|so|and|or|however|also|then|"
    r"still|yet|thus|therefore|instead|such)\b",
    _I,
)
# "Rob Wiblin: Today I'm speaking with..." - a speaker's turn in a transcript.
_SPEAKER = re.compile(r"^((?:[A-Z][\w.'’-]*\s){0,3}[A-Z][\w.'’-]*):\s")


_CLAIM_LOWER = re.compile(_CLAIM.pattern)


def states_claim(sentence: str) -> bool:
    return bool(_CLAIM_LOWER.search(sentence.lower()))


def is_teaser(sentence: str) -> bool:
    return sentence.rstrip('"”’)').endswith("?") or bool(_TEASER.match(sentence))


def is_anaphoric(sentence: str) -> bool:
    return bool(_ANAPHORIC.match(sentence))


def speaker(sentence: str) -> str:
    """The speaker label a transcript line opens with ("Rob Wiblin"), or ''."""
    match = _SPEAKER.match(sentence)
    return match.group(1) if match else ""


# -- verbless run-in titles -------------------------------------------------------------
# A paragraph may open with a short title that has no verb: a run-in heading in plain text
# ("The shutdown problem. Misaligned agents might...") or the title of a figure caption
# ("Cost-performance frontier for our monitors. Our trained monitors provide..."). Without a
# tagger, "has no verb" is judged by what a verb would show: an auxiliary, a subject pronoun,
# a common verb form, a past participle, or an adverb that titles seldom carry (not, than).
# Kept short and English only, so that a real sentence is rarely taken for a title; a short
# sentence whose only verb is rare ("Models hallucinate.") still is.
_MAX_TITLE_WORDS = 6


def _words(text: str) -> list[str]:
    return text.split()


_FUNCTION_VERBS = frozenset(
    _words(
        "is are was were be been being am has have had do does did can could will would shall "
        "should may might must isn't aren't wasn't weren't hasn't haven't hadn't don't doesn't "
        "didn't can't couldn't won't wouldn't shouldn't i we you he she they it there here "
        "let's it's that's there's not no than too very also just now already never always "
        "often still really"
    )
)
_COMMON_VERBS = _words(
    "accept add agree allow appear apply argue ask become begin believe bring build buy call "
    "cause change claim come consider continue create cut decide describe design develop die "
    "draw drive eat exist expect explain fail fall feel find follow get give go grow happen "
    "hear help hold include keep kill know lead learn leave let lie like listen live look lose "
    "love make matter mean meet move need offer open pay play predict present produce propose "
    "prove provide pull push put reach read receive release remain remember report require run "
    "say see seem sell send serve set show sit solve speak spend stand start stay stop study "
    "suggest take talk teach tell tend think train try turn understand use wait walk want "
    "watch win work write"
)
_IRREGULAR = _words(
    "became began brought built bought came drew drove ate fell felt found got gave went grew "
    "heard held kept knew led left lay made meant met paid ran said saw sold sent sat spoke "
    "spent stood took taught told thought understood won wrote written shown given taken done "
    "seen known gone"
)


def _verb_forms() -> frozenset[str]:
    forms = set(_IRREGULAR)
    for verb in _COMMON_VERBS:
        stem = verb[:-1] if verb.endswith("e") else verb
        forms.update((verb, verb + "s", verb + "es", stem + "ed", verb + "d"))
        if verb.endswith("y"):
            forms.update((verb[:-1] + "ies", verb[:-1] + "ied"))
    return frozenset(forms)


_VERB_FORMS = _verb_forms()
_ENGLISH = frozenset(
    _words(
        "the of and to a an in is are was were be that for it with as on this by our we i you not "
        "or but from at have has will can more than while which their they"
    )
)
_TITLE_WORD = re.compile(r"[\w'’-]+")


def is_run_in_title(sentence: str, rest: str) -> bool:
    """Whether `sentence`, opening a paragraph that goes on with `rest`, is a verbless title."""
    if not sentence.endswith(".") or sentence.endswith(".."):
        return False
    words = [w.lower() for w in _TITLE_WORD.findall(sentence)]
    if not words or len(words) > _MAX_TITLE_WORDS or not all(w.isascii() for w in words):
        return False
    if any(w in _FUNCTION_VERBS or w in _VERB_FORMS for w in words):
        return False
    if any(w.endswith("ed") and "-" not in w for w in words[1:]):
        return False
    # Only in English prose, where the lists above mean something.
    following = [w.lower() for w in _TITLE_WORD.findall(rest)]
    return len(following) >= 8 and sum(w in _ENGLISH for w in following) >= 0.1 * len(following)
