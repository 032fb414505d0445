"""Dataset converters: each turns one dataset's release (archive or extracted folder) into the layout its
config in `conf/dataset/` reads, with uint8 index masks (255 = ignore). One module per dataset:

- `stanford_background`: iccv09Data.tar.gz -> images/, labels/, splits/{train,val}.txt
- `drive`, `chase_db1`, `stare`, `hrf`: retinal vessels -> images|annotations/{training,validation}/
  (shared logic in `retinal`)
- `cityscapes`: gtFine labelIds -> labelTrainIds, in place
- `voc_aug`: VOC 2012 + SBD -> SegmentationClassAug/, aug.txt
- `colour_masks`: colour masks -> index masks through a palette (CamVid's class_dict.csv)
- `download`: where the releases come from, checksum-verified download

Helpers: `sources` (folder/zip/tar read alike), `writers` (atomic PNG/text/JSON writes).
`scripts/convert_dataset.py` and `scripts/download_dataset.py` are the command lines over these modules.
Modules are imported on use (no eager imports here) so that `scipy` loads only for VOC.
"""
