"""Readers' replies to articles: the form's guard against bots (``guard``), what a reply
may say and how it is shown (``text``), posting and reading them (``threads``), the
moderators' work (``moderation``) and the emails replies cause (``mail``)."""
