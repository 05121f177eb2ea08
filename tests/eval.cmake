# alexnet-eval, -predict and import-torchvision.py (test_eval_predict.c): the
# torchvision round trip needs Debian's PyTorch; it runs as its own entry,
# which ctest reports as skipped where /usr/bin/python3 cannot import torch.
if(TARGET test_eval_predict)
  alexnet_env_cases(eval_predict torch "torchvision round trip")
endif()
