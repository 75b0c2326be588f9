"""Small hand-written fakes and helpers shared by the tests."""
