def multiply(a, b):
    return a * b

number = int(input("Give me a number "))
for i in range(1, 11):
    print(number, "*", i, "=", multiply(number, i))
