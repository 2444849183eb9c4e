"""CIFAR-10-LT and CIFAR-100-LT: torchvision's CIFAR with a seeded long-tailed training subset."""
from __future__ import annotations

import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import calculate_md5

from errors import ConfigError, DatasetNotFoundError

from .long_tail import draw_splits, given_splits, ldam_splits, profile_counts, read_subset


class _LongTailedCIFAR:
    """Mixin over torchvision's CIFAR classes; `split` is 'train' (long-tailed), 'val' (balanced, held out of
    the training images) or 'test' (whole and balanced). `draw` picks the training images: 'torch' (draw_splits,
    the validation split first) or 'ldam' (LDAM-DRW's, ldam_splits); a `subset` file gives them instead. `root` is torchvision's: the folder that holds (or
    receives) the extracted data; `in_datadir` finds it under a DATASET.datadir."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    seed_folder: str  # the seed keeps each data set in DATASET.datadir/<seed_folder>/
    _verified: set = set()  # (class, root) of the data whose files passed torchvision's md5 check in this process
    verify = True  # DATASET.verify: False reads the files that are present without their md5 check

    def _check_integrity(self) -> bool:
        """Whether the split's files and the meta file are present and (unless `verify` is False) pass their md5
        check; present files that fail it are a ConfigError naming the file, both md5s and DATASET.verify, before
        any download could replace them."""
        # torchvision hashes all six files (180 MB) at every check, and checks twice per split when downloading:
        # 2 s of start-up per split, where one check per data set, split kind and process is enough. Only the files
        # the split reads are checked, so the test split (a released checkpoint's evaluation) needs the test file
        # alone
        files = [*(self.train_list if self.train else self.test_list), [self.meta["filename"], self.meta["md5"]]]
        folder = Path(self.root, self.base_folder)
        if not all((folder / name).is_file() for name, _ in files):
            return False
        key = (type(self), str(self.root), self.train)
        if not self.verify or key in self._verified:
            return True
        for name, md5 in files:
            found = calculate_md5(str(folder / name))
            if found != md5:
                raise ConfigError(f"{type(self).__name__}: {folder / name} is there, but its md5 is {found}, not "
                                  f"{md5} as in {self.filename}: set DATASET.verify false to read the files as they "
                                  f"are (a copy written anew, such as a lossless re-encoding), or delete {folder} "
                                  "and set DATASET.download true to fetch the original")
        self._verified.add(key)
        return True

    def _load_meta(self) -> None:
        # torchvision's checks the meta file's md5 again, which _check_integrity has done (or DATASET.verify false
        # waived)
        with open(Path(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}

    def __init__(self, root: str, train: bool = True, transform=None, target_transform=None, download: bool = False,
                 imb_type: str | None = None, imbalance_factor: float = 1, seed: int = 0, val_per_class: int = 0,
                 split: str | None = None, subset: str | None = None, draw: str = "torch",
                 verify: bool = True) -> None:
        split = split or ("train" if train else "test")
        self.verify = verify
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; choose one of: train, val, test")
        try:
            super().__init__(root, train=split != "test", transform=transform, target_transform=target_transform,
                             download=download)
        except ConfigError:
            raise  # present files that fail the md5 check: the message says which, and the switch
        except (RuntimeError, URLError, OSError) as error:
            raise self._not_found([Path(root)], error if download else None) from None
        except (pickle.UnpicklingError, EOFError, KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise self._damaged(Path(root) / self.base_folder) from None  # md5 passed: converted or cut by hand
        self.split = split
        if split != "test":
            if subset is not None:  # drawn elsewhere, e.g. by another codebase: see DATASET.train_subset
                keep = given_splits(self.targets, read_subset(subset, len(self.targets)), val_per_class, seed)[split]
            elif draw == "ldam":  # LDAM-DRW's images: their profile counts from the whole largest class
                n_max = np.bincount(self.targets).max()
                counts = profile_counts(type(self).__name__, self.classes, int(n_max), imb_type, imbalance_factor, 0)
                keep = ldam_splits(self.targets, counts, val_per_class, seed)[split]
            else:
                n_max = np.bincount(self.targets).max() - val_per_class
                counts = profile_counts(type(self).__name__, self.classes, int(n_max), imb_type, imbalance_factor,
                                        val_per_class)
                keep = draw_splits(self.targets, counts, val_per_class, seed)[split]
            self.data = self.data[keep]
            self.targets = [self.targets[i] for i in keep]
        self.num_per_cls = {c: int(n) for c, n in enumerate(np.bincount(self.targets, minlength=len(self.classes)))}

    def _damaged(self, folder: Path) -> ConfigError:
        """The one-line error naming the first file of `folder` that does not unpickle into what torchvision reads."""
        for name in [name for name, _ in self.train_list + self.test_list] + [self.meta["filename"]]:
            wanted = {self.meta["key"]} if name == self.meta["filename"] else {"data"}
            try:
                with open(folder / name, "rb") as f:
                    entry = pickle.load(f, encoding="latin1")
                why = None if isinstance(entry, dict) and wanted <= entry.keys() else f"it lacks {', '.join(wanted)}"
            except Exception as error:  # noqa: BLE001  any failure to unpickle is the file's damage
                why = f"{type(error).__name__}: {' '.join(str(error).split())[:80] or 'empty or cut short'}"
            if why:
                break
        else:  # each file holds what it should, in shapes torchvision does not read: the folder is the culprit
            name, why = "", "its files do not hold torchvision's CIFAR format"
        return ConfigError(f"{type(self).__name__}: {folder / name} is damaged ({why}), though it passed the md5 "
                           f"check: delete {folder} and set DATASET.download true to fetch it again, or put back the "
                           f"extracted python version of {self.filename}")

    @classmethod
    def roots(cls, datadir: str) -> tuple[Path, list[Path]]:
        """Where the data set sits under DATASET.datadir: datadir/CIFAR10 (or CIFAR100) as the seed lays it out,
        where a download lands too, or datadir itself where only it holds the extracted folder. The root to read
        (the seed's folder when neither holds it), and every folder looked in."""
        folders = [(Path(datadir) / cls.seed_folder).resolve(), Path(datadir).resolve()]
        return next((folder for folder in folders if (folder / cls.base_folder).is_dir()), folders[0]), folders

    @classmethod
    def in_datadir(cls, datadir: str, **kwargs) -> _LongTailedCIFAR:
        """The data set under DATASET.datadir (see `roots`)."""
        root, folders = cls.roots(datadir)
        try:
            return cls(str(root), **kwargs)
        except DatasetNotFoundError as error:
            # the constructor raised `from None`: the failure it reports stays in __context__
            failure = error.__context__ if kwargs.get("download") else None
            raise cls._not_found([root] + [folder for folder in folders if folder != root], failure) from None

    @classmethod
    def _not_found(cls, roots: list[Path], download_error: Exception | None) -> DatasetNotFoundError:
        """The one-line error naming every folder looked in (the first is the one read or downloaded into), and
        the fix."""
        where = " or ".join(str(Path(root).resolve() / cls.base_folder) for root in roots)
        place = "there" if len(roots) == 1 else "in one of them"
        if download_error is None:
            how = f"set DATASET.download true, or place the extracted python version {place}"
        else:
            how = (f"the download into {Path(roots[0]).resolve()} failed ({str(download_error).splitlines()[0]}); "
                   f"place the extracted python version of {cls.filename} from {cls.url.rsplit('/', 1)[0]} {place}")
        return DatasetNotFoundError(f"{cls.__name__}: no valid data in {where}: {how}")


class CIFAR10LT(_LongTailedCIFAR, CIFAR10):
    seed_folder = "CIFAR10"
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)


class CIFAR100LT(_LongTailedCIFAR, CIFAR100):
    seed_folder = "CIFAR100"
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
