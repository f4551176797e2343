# PLACEHOLDER created by the prune/cluster helper so the package imports; delete if still this content.
