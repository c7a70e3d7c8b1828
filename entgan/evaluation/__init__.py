"""Scoring generators against real held-out images that never leave their edge: domain-feature
statistics and FID (`features`), C2ST and KID (`two_sample`), precision / recall and CAS
(`precision_recall_cas`), edge parts merged into scores (`scoring`), every metric and its gate
rules defined once (`metrics`), and known image defects that calibrate them (`defects`)."""
