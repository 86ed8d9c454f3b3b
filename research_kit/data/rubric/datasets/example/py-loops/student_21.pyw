def get_number():
    return int(input("Type a number: "))


def product(a, b):
    return a * b


def show_line(a, b):
    print(a, "x", b, "=", product(a, b))


n = get_number()
for b in range(1, 11):
    show_line(n, b)
