"""Your own videos: a folder of mp4/webm/avi/gif (and png/jpg) files plus captions.jsonl.

    python -m vidgen.prepare --config=configs/folder/data.py:folder=/path/to/videos \
        --workdir=out/folder --mode=build,tokenizer

reads `captions.jsonl` lines `{"file": "a.mp4", "caption": "..."}`, writes the
array_record data set and the tokenizer under `data.data_dir`. Train on the
built records (`records`, default) or straight from the folder (`records=False`).
"""

from vidgen import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, folder="videos", records=True, fps=8.0, workers=2)
  config = configlib.base_config()
  config.task = "prepare"
  d = config.data
  d.source = ("folder_records:" if arg.records else "folder:") + arg.folder
  d.data_dir = "data/folder"
  d.split = d.eval_split = "train"
  d.buckets = "16x64x64:8@2,16x48x80:8@1,1x64x64:32@1"
  d.sampling.fps = arg.fps
  d.num_workers = arg.workers
  config.text.max_len = 64
  return config
