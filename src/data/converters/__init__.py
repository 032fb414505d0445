"""Dataset converters: each turns one dataset's release (archive or extracted folder) into the layout its
config in `conf/dataset/` reads, with uint8 index masks (255 = ignore). One module per dataset (the retinal
ones share `retinal`), plus `colour_masks` (colour -> index masks through a palette), `download` (where the
releases come from), `sources` (folder/zip/tar read alike) and `writers` (atomic writes).
`scripts/convert_dataset.py` and `scripts/download_dataset.py` are their command lines. Modules are imported
on use (no eager imports here) so that `scipy` loads only for VOC.
"""
