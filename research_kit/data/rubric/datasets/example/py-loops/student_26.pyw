def read_number(prompt):
    return int(input(prompt))


def products(n):
    return [n * i for i in range(1, 11)]


n = read_number("Number: ")
rows = products(n)
for i, p in enumerate(rows, start=1):
    print(n, "x", i, "=", p)
print("sum =", sum(rows))
