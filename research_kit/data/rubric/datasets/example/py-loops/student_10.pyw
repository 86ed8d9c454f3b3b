def row(num, k):
    return num * k


def table_sum(num):
    s = 0
    for k in range(1, 11):
        s += row(num, k)
    return s


num = int(input("Number: "))
for k in range(1, 11):
    print(num, "x", k, "=", row(num, k))
print("Sum:", table_sum(num))
