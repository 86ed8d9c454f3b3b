# my times table project
# TODO

print("hello")
