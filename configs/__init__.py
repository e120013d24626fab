"""The recipes, one YAML file each: installed with the package as ``mnist_lit.configs`` (``--model NAME``)."""
