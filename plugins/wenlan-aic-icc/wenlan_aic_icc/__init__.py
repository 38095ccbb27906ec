"""wenlan-aic-icc: AI Challenger 2017 Chinese image captioning (AIC-ICC) for wenlan.

`wenlan_aic_icc.scoring` holds the official AIC-ICC caption evaluation
(jieba + pycocoevalcap's PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D,
plus sacreBLEU). This package stays light to import: worker processes of the
scorer import it, so it must not pull in torch or the model code.
"""

__version__ = "0.1.0"
