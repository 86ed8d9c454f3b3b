# times table
x = input("number")
print("the table of", x)
print(x * 10)
print("bye")
