"""The pseudo-labelling stage: images -> teacher -> WebDataset shards of relative inverse depth."""
