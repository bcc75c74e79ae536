"""Federated evaluation at the hub: the comparison table and the HTML report with ROC curves.

``comparison`` turns the sites' aggregate replies into rows (site, label, setting) and a
Markdown table; ``report`` renders them with ROC curves into one HTML file.
"""

__all__ = ["comparison", "report"]
