"""Related terms used to widen a subscriber's interests (a small hand-written thesaurus).

Keys and values are phrases as a subscriber or an author would write them; both are
normalized (lower-cased, stemmed) before use, so "monitoring" also finds "monitors".
Related terms count for less than the interest's own words (see `rank.EXPANSION_WEIGHT`)
and only ever add to a score. The list favours the topics of the feeds this service was
built around (AI safety, rationality, effective altruism, science and tech blogs); an
interest without an entry simply matches its own words.
"""

from __future__ import annotations

RELATED: dict[str, tuple[str, ...]] = {
    # AI safety research
    "interpretability": (
        "mechanistic interpretability",
        "model internals",
        "activations",
        "sparse autoencoder",
        "circuits",
        "probes",
        "linear probe",
        "steering vector",
        "features",
        "neurons",
        "attribution",
        "logit lens",
    ),
    "model internals": ("activations", "interpretability", "residual stream", "probes", "neurons"),
    "activation steering": ("steering vector", "activations", "representation engineering"),
    "ai control": (
        "monitoring",
        "monitor",
        "untrusted model",
        "trusted monitoring",
        "scheming",
        "sabotage",
        "red team",
        "control evaluation",
    ),
    "monitoring": ("monitor", "oversight", "chain of thought monitoring", "detection"),
    "scheming": ("deceptive alignment", "alignment faking", "sandbagging"),
    "alignment": ("misalignment", "aligned", "corrigibility", "reward hacking"),
    "alignment theory": ("corrigibility", "agent foundations", "optimization", "superintelligence"),
    "corrigibility": ("shutdown", "shutdownable", "off switch", "corrigible", "deference"),
    "shutdown problem": ("shutdownable", "corrigibility", "off switch", "shutdown"),
    "agent foundations": (
        "decision theory",
        "embedded agency",
        "optimizer",
        "agency",
        "goal directedness",
    ),
    "fine-tuning": ("finetune", "sft", "post-training", "rlhf", "fine-tuned"),
    "rlhf": ("reinforcement learning from human feedback", "reward model", "preference", "rl"),
    "llm post-training": ("fine-tuning", "sft", "rlhf", "rl"),
    "emergent misalignment": ("misalignment", "misaligned", "generalization"),
    "evals": ("evaluations", "benchmark", "dangerous capabilities"),
    "frontier model evaluations": ("evals", "dangerous capability", "testing", "red teaming"),
    # Policy and governance
    "ai policy": (
        "regulation",
        "legislation",
        "executive order",
        "governance",
        "congress",
        "bill",
        "government",
        "lobbying",
    ),
    "regulation": ("regulate", "legislation", "law", "rules", "compliance"),
    "governance": ("policy", "regulation", "institutions", "oversight", "accountability"),
    "ai governance": ("policy", "regulation", "compute governance", "international", "treaty"),
    # Rationality, epistemics, writing
    "rationality": ("rationalist", "cognitive bias", "bayesian", "reasoning"),
    "epistemics": ("epistemic", "truth seeking", "calibration", "knowledge", "evidence"),
    "cognitive biases": ("bias", "heuristics", "motivated reasoning"),
    "writing": ("writer", "editing", "draft", "essay", "prose", "writers block"),
    "forecasting": (
        "forecast",
        "prediction market",
        "predictions",
        "metaculus",
        "superforecasters",
        "calibration",
        "base rate",
    ),
    # Biosecurity and preparedness
    "biosecurity": (
        "pandemic",
        "pathogen",
        "biological",
        "bioweapons",
        "dna synthesis screening",
        "far uvc",
    ),
    "pandemic preparedness": ("pandemic", "biosecurity", "outbreak", "pathogen", "ppe"),
    "emergency preparedness": ("emergency", "prepping", "disaster"),
    # Effective altruism and general
    "effective altruism": ("ea", "cause prioritization", "givewell", "cost effectiveness"),
    "animal welfare": ("factory farming", "animals", "welfare", "cage free"),
    "climate": ("climate change", "emissions", "carbon", "warming"),
    "machine learning": ("deep learning", "neural network", "training", "llm"),
    "deep learning theory": (
        "learning theory",
        "scaling laws",
        "generalization",
        "training dynamics",
    ),
}
