"""The static analysis of notebook cells that the student-notebook checks rely on."""

import nbformat

from notebook_names import backward_slice, binder, cell_names, notebook_names


def test_binds_and_needs_of_a_cell():
    names = cell_names(
        "import numpy as np\n"
        "from os import path as p\n"
        "x = x + 1\n"
        "total += step\n"
        "for item in items:\n"
        "    print(item, np.pi)\n"
        "squares = [k * k for k in range(n)]\n"
        "def f(a, *args, b=default, **kw):\n"
        "    local = a + later_global\n"
        "    return local, helper(b)\n"
        "def helper(v):\n"
        "    return v\n"
        "%pip install nothing\n"
    )
    assert names.binds == {"np", "p", "x", "total", "item", "squares", "f", "helper"}
    # `later_global` is read by f's body when f runs; `helper` is bound by the cell itself.
    assert names.needs == {"x", "total", "step", "items", "n", "default", "later_global"}


def test_the_slice_follows_each_name_to_the_last_cell_binding_it():
    code = nbformat.v4.new_code_cell
    notebook = nbformat.v4.new_notebook(
        cells=[
            code("a = 1"),
            code("b = a + 1"),
            code("a = 10\nunused = 0"),
            code("print('expensive, not needed')"),
            code("c = a * b"),
        ]
    )
    names = notebook_names(notebook)
    assert binder(names, 4, "a") == 2 and binder(names, 2, "a") == 0 and binder(names, 0, "a") is None
    assert backward_slice(names, {4}) == ([0, 1, 2, 4], {})
    assert backward_slice(names, {1, 3}) == ([0, 1, 3], {})
    notebook.cells.append(code("print(nowhere)"))
    assert backward_slice(notebook_names(notebook), {5}) == ([5], {5: {"nowhere"}})
