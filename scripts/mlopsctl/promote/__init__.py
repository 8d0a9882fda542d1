"""Promotion: registry aliases in, commits and pull requests out.

- `edits`: what moves (a model pin, an image tag) and how each move is worded;
- `gates`: what a version must show before an environment pins it (pure);
- `plan`: aliases against pins, through the gates, into a typed `Plan`;
- `landing`: the `Promoter`, which edits, validates, commits, pushes, and plans again when the
  branch moves under it; its `Outcome`s carry a kind;
- `flows`: the use cases (promote, set-image, rollback) on a fresh clone of the remote.
"""
