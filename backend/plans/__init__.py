"""Plans: a set of dependent tasks written in a chat or by hand, reviewed, then run."""
