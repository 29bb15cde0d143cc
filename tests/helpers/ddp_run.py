"""Run under torchrun by tests/test_distributed.py: one rank's view of two epochs."""
import sys

import torch
import torch.distributed as dist
import torchvision

import gpuaug
from gpuaug import transforms as T


def main(root: str, out: str) -> None:
    dist.init_process_group("gloo")
    loader = gpuaug.DataLoader(torchvision.datasets.ImageFolder(root), batch_size=2, shuffle=True,
                               num_workers=1, seed=7, device="cpu",
                               transform=T.Compose([T.RandomResizedCrop(16), T.RandomHorizontalFlip(),
                                                    T.ColorJitter(0.3, 0.3, 0.3, 0.05)]))
    seen = {}
    for epoch in range(2):
        loader.set_epoch(epoch)
        seen[epoch] = [(loader.indices.tolist(), images.clone(), labels.clone()) for images, labels in loader]
    torch.save({"rank": loader.rank, "world": loader.world_size, "len": len(loader), "seen": seen},
               f"{out}/rank{dist.get_rank()}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
