"""The report as people read it: the decision card (`decision`) and its drawing in HTML and markdown (`render`),
made from what eval wrote (`metrics.json`, `details.json`, figure bytes).

A layer of its own, below both `embedfit.evaluation` (which writes `report.md` and `report.html` with it) and
`embedfit.app` (whose Eval tab draws a report folder with it): the two never import each other, and neither keeps
its own copy of how a report looks.
"""
