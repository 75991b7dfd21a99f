"""The named datasets of the FastGAN paper and of the 100-shot / AnimalFace benchmarks.

One plain table (`DATASETS`) that a person can read and a lab can audit: for each dataset the
expected image count, the training resolution of the paper, the licence/citation we print, and the
sources tried in order. Nothing here touches the network.

Sources, as of the last check (the project could not reach any of them from its build machine):
* Hugging Face `huggan/few-shot-*` datasets: one parquet file per split (`data/train-*.parquet`,
  images as {"bytes", "path"} structs) plus the Hub's own conversion under
  `refs/convert/parquet/default/train/0000.parquet`. `verified=True` means the file was seen in the
  repository listing; `verified=False` means the path is inferred from the sibling repositories.
  `moongate` and `aurora` have that conversion too (checked against the public copies for
  issue 12: moongate holds 136 images).
* The DiffAugment (data-efficient-gans) zip files. The per-dataset MIT URLs were reported dead in
  Dec 2024 (mit-han-lab/data-efficient-gans#106); since Sep 2024 the authors point to one Dropbox
  archive holding every 100-shot / AnimalFace set, whose internal layout we have not seen. It is
  the last resort of five datasets: downloaded once, kept under `<data_dir>/.downloads/bundles/`
  until all five are extracted from it (see resolve.py), and refused above `BUNDLE_MAX_BYTES`.
* No checksums are published for any of them: `sha256` stays None until someone records one.

`FASTGAN_DATA_MIRROR` replaces all of this with `<mirror>/<name>.zip` (see resolve.py).
"""

from __future__ import annotations

from dataclasses import dataclass

HF_ROOT = "https://huggingface.co/datasets/huggan"
HF_TRAIN = "data/train-00000-of-00001.parquet"
HF_CONVERTED = "default/train/0000.parquet"  # on the refs/convert/parquet branch
MIT_ROOT = "https://data-efficient-gans.mit.edu/datasets"  # reported dead, Dec 2024
MIT_OLD_ROOT = "https://hanlab.mit.edu/projects/data-efficient-gans/datasets"  # before Aug 2021
DIFFAUG_DROPBOX = (
    "https://www.dropbox.com/scl/fi/f641djlqsyen5emxnh22r/data-efficient-gans.zip"
    "?rlkey=xlmkf445fzwfno91i7954sp60&st=0itvqzdc&dl=1"  # dl=1: the file, not the preview page
)
DIFFAUG_HOME = "https://github.com/mit-han-lab/data-efficient-gans"
# The bundle holds the five 100-shot / AnimalFace sets (849 images at 256x256, ~100 MB as PNG) and
# perhaps the other low-shot sets of the same page (a few hundred images more): 512 MiB leaves
# room for that, yet refuses a multi-GB archive (pretrained models, FFHQ/LSUN subsets) before it
# fills a laptop's disk. The download stops at the limit, even without a Content-Length.
BUNDLE_MAX_BYTES = 512 * 2**20
FASTGAN_DRIVE = "https://drive.google.com/file/d/1aAJCZbXNHyraJ6Mi13dSbe7pTyfPXha0/view"

CITE_DIFFAUG = ('Zhao, Liu, Lin, Zhu, Han. "Differentiable Augmentation for Data-Efficient GAN '
                'Training." NeurIPS 2020.')
CITE_ANIMALFACE = ('Si, Zhu. "Learning Hybrid Image Templates (HIT) by Information Projection '
                   'for Unsupervised Learning of Object Categories." TPAMI 2012.')
CITE_FASTGAN = ('Liu, Zhu, Song, Elgammal. "Towards Faster and Stabilized GAN Training for '
                'High-fidelity Few-shot Image Synthesis." ICLR 2021.')
WEB_IMAGES = "images collected from the web; no licence stated by the publisher: research use only"


@dataclass(frozen=True)
class Source:
    """One place a dataset can come from. All `urls` are needed (a dataset may be split in shards).

    kind: "zip" (an archive of image files) or "parquet" (Hugging Face rows of encoded images).
    sha256: one hex digest per url, or () when unknown.
    subdir: for an archive that bundles many datasets, the folder/zip names to pick inside it
      (such an archive is downloaded once for all the datasets it serves, see resolve.py).
    max_bytes: a download larger than this is refused (None: no limit).
    """

    urls: tuple[str, ...]
    kind: str
    sha256: tuple[str | None, ...] = ()
    subdir: tuple[str, ...] = ()
    verified: bool = True
    note: str = ""
    max_bytes: int | None = None

    def checksum(self, index: int) -> str | None:
        return self.sha256[index] if index < len(self.sha256) else None


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: what the dataset is, how big it should be, and where to get it."""

    name: str
    title: str
    count: int | None  # images expected after extraction; None when not known
    resolution: int  # training resolution used in the paper
    sources: tuple[Source, ...]
    licence: str
    citation: str
    homepage: str = ""
    aliases: tuple[str, ...] = ()

    def credit(self) -> str:
        """The one line printed after a download: what the user must respect and cite."""
        return f"{self.name}: {self.licence}. Cite: {self.citation}"


def hf(repo: str, shards: int = 1, *, main_seen: bool = True,
       converted_seen: bool = True) -> tuple[Source, ...]:
    """The Hub's parquet file(s) of `huggan/<repo>`, then its automatic parquet conversion.

    `*_seen` record whether that exact file was seen in the repository listing.
    """
    if shards == 1:
        files = (HF_TRAIN,)
        conv = (HF_CONVERTED,)
    else:
        files = tuple(f"data/train-{i:05d}-of-{shards:05d}.parquet" for i in range(shards))
        conv = tuple(f"default/train/{i:04d}.parquet" for i in range(shards))
    main = Source(tuple(f"{HF_ROOT}/{repo}/resolve/main/{f}" for f in files), "parquet",
                  verified=main_seen, note=f"huggingface.co/datasets/huggan/{repo}")
    branch = "refs%2Fconvert%2Fparquet"
    conv_src = Source(tuple(f"{HF_ROOT}/{repo}/resolve/{branch}/{f}" for f in conv), "parquet",
                      verified=converted_seen, note=f"huggan/{repo}, Hub parquet conversion")
    return (main, conv_src)


def diffaug(archive: str) -> tuple[Source, ...]:
    """The DiffAugment zips (dead per-dataset links kept last-but-one) and the Dropbox bundle."""
    return (
        Source((f"{MIT_ROOT}/{archive}.zip",), "zip", verified=False,
               note="reported dead in Dec 2024 (data-efficient-gans#106)"),
        Source((f"{MIT_OLD_ROOT}/{archive}.zip",), "zip", verified=False, note="pre-2021 address"),
        Source((DIFFAUG_DROPBOX,), "zip", subdir=(archive,), verified=False,
               note="all DiffAugment datasets in one archive; layout not checked",
               max_bytes=BUNDLE_MAX_BYTES),
    )


DATASETS: tuple[DatasetInfo, ...] = (
    # -- 256x256 few-shot benchmarks (DiffAugment 100-shot, AnimalFace) -------------------------
    DatasetInfo(
        "obama", "100-shot Obama", 100, 256,
        hf("few-shot-obama", main_seen=False) + diffaug("100-shot-obama"),
        WEB_IMAGES, CITE_DIFFAUG, DIFFAUG_HOME, ("100-shot-obama",)),
    DatasetInfo(
        "grumpy_cat", "100-shot Grumpy cat", 100, 256,
        hf("few-shot-grumpy-cat") + diffaug("100-shot-grumpy_cat"),
        WEB_IMAGES, CITE_DIFFAUG, DIFFAUG_HOME, ("grumpycat", "100-shot-grumpy_cat")),
    DatasetInfo(
        "panda", "100-shot Panda", 100, 256,
        hf("few-shot-panda") + diffaug("100-shot-panda"),
        WEB_IMAGES, CITE_DIFFAUG, DIFFAUG_HOME, ("100-shot-panda",)),
    DatasetInfo(
        "animalface_cat", "AnimalFace cat", 160, 256,
        hf("few-shot-cat", main_seen=False, converted_seen=False) + diffaug("AnimalFace-cat"),
        "AnimalFace dataset; no licence stated: research use only", CITE_ANIMALFACE, DIFFAUG_HOME,
        ("animalface-cat", "cat")),
    DatasetInfo(
        "animalface_dog", "AnimalFace dog", 389, 256,
        hf("few-shot-dog") + diffaug("AnimalFace-dog"),
        "AnimalFace dataset; no licence stated: research use only", CITE_ANIMALFACE, DIFFAUG_HOME,
        ("animalface-dog", "dog")),
    # -- 1024x1024 sets of the FastGAN paper (Hugging Face copies of the authors' Drive folder) -
    DatasetInfo(
        "pokemon", "Pokemon", 833, 1024, hf("few-shot-pokemon"),
        "Pokemon artwork (c) Nintendo / Creatures / GAME FREAK: research use only",
        CITE_FASTGAN, FASTGAN_DRIVE),
    DatasetInfo(
        "art", "Art paintings", 1000, 1024, hf("few-shot-art-painting", shards=2),
        "paintings collected from WikiArt by the FastGAN authors: research use only",
        CITE_FASTGAN, FASTGAN_DRIVE, ("art_painting", "art-painting")),
    DatasetInfo(
        "anime", "Anime face", 120, 1024, hf("few-shot-anime-face"),
        WEB_IMAGES, CITE_FASTGAN, FASTGAN_DRIVE, ("anime_face", "anime-face")),
    DatasetInfo(
        "skulls", "Skulls", 97, 1024, hf("few-shot-skulls"),
        WEB_IMAGES, CITE_FASTGAN, FASTGAN_DRIVE, ("skull",)),
    DatasetInfo(
        "shells", "Shells", 64, 1024, hf("few-shot-shells"),
        WEB_IMAGES, CITE_FASTGAN, FASTGAN_DRIVE, ("shell",)),
    DatasetInfo(
        "moongate", "Moongate", 136, 1024, hf("few-shot-moongate"),
        WEB_IMAGES, CITE_FASTGAN, FASTGAN_DRIVE),
    DatasetInfo(
        "fauvism", "Fauvism still life", 124, 1024, hf("few-shot-fauvism-still-life"),
        "still-life paintings collected from the web: research use only", CITE_FASTGAN,
        FASTGAN_DRIVE, ("fauvism_still_life", "fauvism-still-life")),
    # -- HugGAN community few-shot sets (not in the paper; source and licence not stated) ---------
    DatasetInfo(
        "universe", "Universe (HugGAN community)", 501, 256, hf("few-shot-universe"),
        "HugGAN community upload; source and licence not stated: research use only",
        "Hugging Face dataset huggan/few-shot-universe.", f"{HF_ROOT}/few-shot-universe"),
    DatasetInfo(
        "aurora", "Aurora (HugGAN community)", None, 256, hf("few-shot-aurora"),
        "HugGAN community upload; source and licence not stated: research use only",
        "Hugging Face dataset huggan/few-shot-aurora.", f"{HF_ROOT}/few-shot-aurora"),
)


def normalise(name: str) -> str:
    """`Grumpy-Cat` and `grumpy_cat` are the same name."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def get(name: str) -> DatasetInfo | None:
    """The entry called `name` (or one of its aliases), else None."""
    key = normalise(name)
    for info in DATASETS:
        if key == info.name or key in {normalise(a) for a in info.aliases}:
            return info
    return None


def names() -> list[str]:
    return [info.name for info in DATASETS]
