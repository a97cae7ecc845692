"""The CamVid study behind ``benchmarks/camvid_study.py`` (its command line): the plan (:mod:`.plan`), running it
(:mod:`.runs`), the statistics (:mod:`.stats`), the markdown (:mod:`.report`) and the pictures (:mod:`.figures`)."""
