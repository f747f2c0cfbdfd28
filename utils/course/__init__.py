"""The course's own machinery, apart from the library.

The setup cell (:mod:`~utils.course.environment`), the exercises' checks
(:mod:`~utils.course.checks`) and the student versions (:mod:`~utils.course.exercises`),
the chapter list read from ``_toc.yml`` (:mod:`~utils.course.chapters`), the survey's
taxonomy as data and its page (:mod:`~utils.course.taxonomy`), published head indices
(:mod:`~utils.course.published`), the findings registry - every claim a chapter states,
one YAML file per model - and its pages (:mod:`~utils.course.findings`,
:mod:`~utils.course.two_models_page`), the book's Sphinx extension
(:mod:`~utils.course.book_assets`) and the page on the library
(:mod:`~utils.course.library_page`).

The course machinery imports the library; the library never imports it
(``tests/test_course_layout.py`` enforces that).
"""
