"""wenlan-aic-icc: AI Challenger 2017 Chinese image captioning (AIC-ICC) for wenlan.

`task` is the `wenlan.tasks` entry point (adds `wenlan finetune-caption`, `wenlan caption`
and `wenlan score`, see `commands`); `model` (decoder on BriVL's image
tower), `decoding` (greedy / beam search), `finetune`, `generate` and `checkpoint` hold
the captioner; `scoring` the official AIC-ICC caption evaluation (jieba + pycocoevalcap's
PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, plus sacreBLEU). This package stays
light to import: worker processes of the scorer import it and `wenlan` loads the entry
point at start-up, so only the submodules that run models import torch.
"""

__version__ = "0.1.0"
