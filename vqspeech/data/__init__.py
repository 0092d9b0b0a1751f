"""The data stages: corpus readers and their licences, `prepare`, the manifest, training crops, the
embedded demo corpus, phone alignments and `align`, phone folding, and the codes folder."""
